package wsconn

import (
	"errors"
	"testing"
)

// FuzzRead feeds arbitrary bytes as the server's stream, handed out in
// reads of chunk bytes (0: all at once), and reads until an error.
func FuzzRead(f *testing.F) {
	f.Add(uint8(0), cat(textFrame("one"), textFrame("two"), textFrame("three")))
	f.Add(uint8(1), cat(frame(false, opText, []byte("he")), frame(true, opPing, []byte("p")), frame(true, opContinuation, []byte("llo"))))
	f.Add(uint8(3), cat(frame(true, opBinary, payload(300)), closeFrame(1000, "bye")))
	f.Add(uint8(0), cat(textFrame("a"), frame(true, opText, payload(70000))))
	f.Add(uint8(7), cat(frame(true, opText, payload(126)), frame(true, opPong, nil), frame(true, opClose, nil)))
	f.Add(uint8(0), cat(textFrame("a"), []byte{0x81, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}))
	f.Add(uint8(0), cat(frame(false, opText, []byte("a")), []byte{0x80, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}))
	f.Add(uint8(2), []byte{0x81, 0x81, 1, 2, 3, 4, 5})

	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, chunk uint8, stream []byte) {
		var chunks [][]byte
		for b := stream; len(b) > 0; {
			n := len(b)
			if chunk > 0 {
				n = min(n, int(chunk))
			}
			chunks, b = append(chunks, b[:n]), b[n:]
		}
		fc := newFake(chunks...)
		c := newConn(fc)
		c.SetReadLimit(limit)
		for {
			buffered := c.Buffered()
			// A buffered message needs no read: the fake has none to give.
			fc.setDry(buffered)
			msg, err := c.Read()
			fc.setDry(false)
			if buffered && err != nil {
				t.Fatalf("Buffered was true, then Read = %v", err)
			}
			if err != nil {
				var pe *ProtocolError
				var ce *CloseError
				if !errors.As(err, &pe) && !errors.As(err, &ce) && err != ErrTooBig && err != ErrUnexpectedEOF {
					t.Fatalf("Read = %v, not an error the stream can cause", err)
				}
				if !fc.isClosed() {
					t.Fatalf("Read = %v and the connection is open", err)
				}
				if _, err2 := c.Read(); err2 != err {
					t.Fatalf("Read after %v = %v", err, err2)
				}
				return
			}
			if len(msg) > limit {
				t.Fatalf("message of %d bytes over the limit %d", len(msg), limit)
			}
		}
	})
}
