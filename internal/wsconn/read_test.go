package wsconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestReadMessages(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 8<<10 - 4, 8 << 10, 65535, 65536, 100 << 10}
	var stream []byte
	for _, n := range sizes {
		stream = append(stream, frame(true, opText, payload(n))...)
	}
	stream = append(stream, frame(true, opBinary, []byte("bin"))...)
	for _, chunk := range []int{1, 2, 7, 1000, 4096, len(stream)} {
		var chunks [][]byte
		for b := stream; len(b) > 0; b = b[min(chunk, len(b)):] {
			chunks = append(chunks, b[:min(chunk, len(b))])
		}
		c := newConn(newFake(chunks...))
		for _, n := range sizes {
			msg, err := c.Read()
			if err != nil {
				t.Fatalf("chunk %d: Read of %d bytes: %v", chunk, n, err)
			}
			if !bytes.Equal(msg, payload(n)) {
				t.Fatalf("chunk %d: message of %d bytes: got %d bytes, not the payload", chunk, n, len(msg))
			}
		}
		if msg, err := c.Read(); err != nil || string(msg) != "bin" {
			t.Fatalf("chunk %d: binary message: %q, %v", chunk, msg, err)
		}
	}
}

func TestReadFragmented(t *testing.T) {
	big := payload(20 << 10)
	stream := cat(
		frame(false, opText, []byte("hel")),
		frame(false, opContinuation, nil),
		frame(true, opPing, []byte("p1")), // control frames may come between fragments
		frame(false, opContinuation, []byte("lo ")),
		frame(true, opPong, nil),
		frame(true, opContinuation, big),
		textFrame("next"),
		frame(false, opBinary, []byte("b1")),
		frame(true, opContinuation, []byte("b2")),
	)
	for _, chunk := range []int{1, 3, len(stream)} {
		var chunks [][]byte
		for b := stream; len(b) > 0; b = b[min(chunk, len(b)):] {
			chunks = append(chunks, b[:min(chunk, len(b))])
		}
		f := newFake(chunks...)
		c := newConn(f)
		msg, err := c.Read()
		if want := append([]byte("hello "), big...); err != nil || !bytes.Equal(msg, want) {
			t.Fatalf("chunk %d: fragmented message: %d bytes, %v; want %d bytes", chunk, len(msg), err, len(want))
		}
		if msg, err := c.Read(); err != nil || string(msg) != "next" {
			t.Fatalf("chunk %d: message after it: %q, %v", chunk, msg, err)
		}
		if msg, err := c.Read(); err != nil || string(msg) != "b1b2" {
			t.Fatalf("chunk %d: second fragmented message: %q, %v", chunk, msg, err)
		}
		frames := f.written(t)
		if len(frames) != 1 || frames[0].op != opPong || string(frames[0].payload) != "p1" {
			t.Fatalf("chunk %d: written %+v, want one pong with p1", chunk, frames)
		}
	}
}

func TestReadAnswersPing(t *testing.T) {
	f := newFake(cat(frame(true, opPing, []byte("abc")), frame(true, opPing, nil), textFrame("x")))
	c := newConn(f)
	msg, err := c.Read()
	if err != nil || string(msg) != "x" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
	frames := f.written(t)
	if len(frames) != 2 {
		t.Fatalf("wrote %d frames, want 2 pongs", len(frames))
	}
	for i, want := range []string{"abc", ""} {
		if fr := frames[i]; fr.op != opPong || !fr.fin || !fr.masked || string(fr.payload) != want {
			t.Errorf("frame %d = %+v, want a masked final pong with %q", i, fr, want)
		}
	}
}

func TestReadProtocolErrors(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
	}{
		{"masked server frame", []byte{0x81, 0x81, 1, 2, 3, 4, 'x' ^ 1}},
		{"RSV1 set", []byte{0x81 | 0x40, 0}},
		{"RSV2 set", []byte{0x81 | 0x20, 0}},
		{"RSV3 set", []byte{0x81 | 0x10, 0}},
		{"unknown data opcode", []byte{0x83, 0}},
		{"unknown control opcode", []byte{0x8B, 0}},
		{"fragmented ping", []byte{0x09, 0}},
		{"fragmented close", []byte{0x08, 0}},
		{"ping over 125 bytes", cat([]byte{0x89, 126, 0, 126}, payload(126))},
		{"continuation without a message", frame(true, opContinuation, []byte("x"))},
		{"non-final continuation without a message", frame(false, opContinuation, []byte("x"))},
		{"text inside a fragmented message", cat(frame(false, opText, []byte("a")), textFrame("b"))},
		{"binary inside a fragmented message", cat(frame(false, opText, []byte("a")), frame(false, opBinary, []byte("b")))},
		{"64-bit length with the top bit set", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{"close with a 1-byte payload", []byte{0x88, 1, 0x03}},
		{"close reason not UTF-8", cat([]byte{0x88, 4, 0x03, 0xE8}, []byte{0xFF, 0xFE})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// After a good message in the same read, and alone.
			for _, prefix := range [][]byte{nil, textFrame("ok")} {
				f := newFake(cat(prefix, tt.stream))
				c := newConn(f)
				if prefix != nil {
					if msg, err := c.Read(); err != nil || string(msg) != "ok" {
						t.Fatalf("message before the bad frame: %q, %v", msg, err)
					}
				}
				msg, err := c.Read()
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("Read = %q, %v; want a *ProtocolError", msg, err)
				}
				if msg != nil {
					t.Errorf("message %q with the error", msg)
				}
				wantClosedWith(t, c, f, 1002)
				if _, err2 := c.Read(); err2 != err {
					t.Errorf("second Read = %v, want the same error %v", err2, err)
				}
				if c.Buffered() {
					t.Error("Buffered after an error")
				}
			}
		})
	}
}

func TestReadEOF(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
	}{
		{"before any frame", nil},
		{"after one byte of a header", []byte{0x81}},
		{"inside a 16-bit length", []byte{0x81, 126, 1}},
		{"inside a 64-bit length", []byte{0x82, 127, 0, 0, 0}},
		{"inside a payload", []byte{0x81, 5, 'h', 'e'}},
		{"inside a large payload", frame(true, opText, payload(30000))[:20000]},
		{"inside a fragment", cat(frame(false, opText, []byte("ab")), []byte{0x80, 3, 'c'})},
		{"between fragments", frame(false, opText, []byte("ab"))},
		{"inside a ping", []byte{0x89, 3, 'p'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(tt.stream)
			c := newConn(f)
			_, err := c.Read()
			if err != ErrUnexpectedEOF {
				t.Fatalf("Read error = %v, want ErrUnexpectedEOF", err)
			}
			// Callers take io.EOF for a normal end: this must not be one.
			if errors.Is(err, io.EOF) {
				t.Error("errors.Is(err, io.EOF) is true")
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Error("errors.Is(err, io.ErrUnexpectedEOF) is false")
			}
			if !f.isClosed() {
				t.Error("connection not closed")
			}
			if _, err2 := c.Read(); err2 != err {
				t.Errorf("second Read = %v, want %v", err2, err)
			}
		})
	}

	// An EOF returned together with the last bytes of a message: the
	// message comes first, the end after it.
	f := newFake(textFrame("last"))
	f.end = io.EOF
	r := &eofWithData{f}
	c := newConn(r)
	if msg, err := c.Read(); err != nil || string(msg) != "last" {
		t.Fatalf("Read = %q, %v; want the message before the end", msg, err)
	}
	if _, err := c.Read(); err != ErrUnexpectedEOF {
		t.Fatalf("Read after the end = %v, want ErrUnexpectedEOF", err)
	}
}

// eofWithData returns io.EOF with the last bytes it reads.
type eofWithData struct{ *fakeConn }

func (e *eofWithData) Read(p []byte) (int, error) {
	n, err := e.fakeConn.Read(p)
	if err == nil && e.remaining() == 0 {
		err = io.EOF
	}
	return n, err
}

func TestReadOtherError(t *testing.T) {
	boom := errors.New("boom")
	f := newFake([]byte{0x81, 5, 'h'})
	f.end = boom
	c := newConn(f)
	if _, err := c.Read(); err != boom {
		t.Fatalf("Read = %v, want the reader's error", err)
	}
	if !f.isClosed() {
		t.Error("connection not closed")
	}
}

func TestReadClose(t *testing.T) {
	tests := []struct {
		name      string
		frame     []byte
		code      int
		reason    string
		replyCode int
	}{
		{"no code", frame(true, opClose, nil), 1005, "", 1000},
		{"normal", closeFrame(1000, ""), 1000, "", 1000},
		{"with reason", closeFrame(4001, "bye now"), 4001, "bye now", 4001},
		{"UTF-8 reason", closeFrame(1001, "déjà vu"), 1001, "déjà vu", 1001},
		{"inside a fragmented message", cat(frame(false, opText, []byte("a")), closeFrame(1011, "oops")), 1011, "oops", 1011},
		{"code that may not be sent", closeFrame(1006, ""), 1006, "", 1002},
		{"code below 1000", closeFrame(999, ""), 999, "", 1002},
		{"reserved code", closeFrame(2000, ""), 2000, "", 1002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(cat(textFrame("before"), tt.frame, textFrame("after")))
			c := newConn(f)
			if msg, err := c.Read(); err != nil || string(msg) != "before" {
				t.Fatalf("first Read = %q, %v", msg, err)
			}
			_, err := c.Read()
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Read = %v, want a *CloseError", err)
			}
			if ce.Code != tt.code || ce.Reason != tt.reason {
				t.Errorf("CloseError = %d %q, want %d %q", ce.Code, ce.Reason, tt.code, tt.reason)
			}
			wantClosedWith(t, c, f, tt.replyCode)
			if _, err2 := c.Read(); err2 != err {
				t.Errorf("second Read = %v, want the same *CloseError", err2)
			}
		})
	}
}

func TestReadLimit(t *testing.T) {
	t.Run("one frame at the limit", func(t *testing.T) {
		c := newConn(newFake(frame(true, opText, payload(100))))
		c.SetReadLimit(100)
		if msg, err := c.Read(); err != nil || len(msg) != 100 {
			t.Fatalf("Read = %d bytes, %v", len(msg), err)
		}
	})
	t.Run("fragments at the limit", func(t *testing.T) {
		c := newConn(newFake(cat(frame(false, opText, payload(60)), frame(true, opContinuation, payload(40)))))
		c.SetReadLimit(100)
		if msg, err := c.Read(); err != nil || len(msg) != 100 {
			t.Fatalf("Read = %d bytes, %v", len(msg), err)
		}
	})
	t.Run("default", func(t *testing.T) {
		c := newConn(newFake())
		c.SetReadLimit(10)
		c.SetReadLimit(0)
		if c.readLimit != DefaultReadLimit {
			t.Fatalf("SetReadLimit(0) left %d, want DefaultReadLimit", c.readLimit)
		}
	})
	over := []struct {
		name   string
		stream []byte
	}{
		{"one frame", frame(true, opText, payload(101))},
		{"one frame, header only", []byte{0x81, 126, 0x10, 0}},
		{"a first fragment", frame(false, opText, payload(101))},
		{"the sum of fragments", cat(frame(false, opText, payload(60)), frame(true, opContinuation, payload(41)))},
		// 3 + (1<<63 - 1) wraps around in int64.
		{"a fragment with a 63-bit length", cat(frame(false, opText, []byte("abc")), []byte{0x80, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})},
		{"a frame with a 63-bit length", []byte{0x81, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
	}
	for _, tt := range over {
		t.Run("over: "+tt.name, func(t *testing.T) {
			f := newFake(tt.stream, payload(200))
			c := newConn(f)
			c.SetReadLimit(100)
			msg, err := c.Read()
			if err != ErrTooBig {
				t.Fatalf("Read = %d bytes, %v; want ErrTooBig", len(msg), err)
			}
			wantClosedWith(t, c, f, 1009)
			if _, err := c.Read(); err != ErrTooBig {
				t.Errorf("second Read = %v, want ErrTooBig", err)
			}
		})
	}
}

func TestBuffered(t *testing.T) {
	t.Run("three frames in one read", func(t *testing.T) {
		f := newFake(cat(textFrame("one"), frame(true, opBinary, payload(300)), textFrame("three")), textFrame("later"))
		c := newConn(f)
		if c.Buffered() {
			t.Fatal("Buffered before any Read")
		}
		for i, want := range []string{"one", string(payload(300)), "three"} {
			if i > 0 {
				// The frame is already here: Read must not read.
				f.setDry(true)
			}
			msg, err := c.Read()
			f.setDry(false)
			if err != nil || string(msg) != want {
				t.Fatalf("Read %d = %q, %v", i, msg, err)
			}
			if got, want := c.Buffered(), i < 2; got != want {
				t.Fatalf("Buffered after Read %d = %v, want %v", i, got, want)
			}
		}
		if msg, err := c.Read(); err != nil || string(msg) != "later" {
			t.Fatalf("Read of the next chunk = %q, %v", msg, err)
		}
	})
	falseCases := []struct {
		name string
		next []byte // what follows a first message in the same read
	}{
		{"nothing", nil},
		{"one byte of a header", []byte{0x81}},
		{"a partial 16-bit length", []byte{0x81, 126, 1}},
		{"a partial payload", textFrame("partial")[:5]},
		{"a partial large payload", frame(true, opText, payload(1000))[:900]},
		{"a ping", cat(frame(true, opPing, nil), textFrame("x"))},
		{"a pong", cat(frame(true, opPong, nil), textFrame("x"))},
		{"a close", closeFrame(1000, "")},
		{"a first fragment", cat(frame(false, opText, []byte("a")), frame(true, opContinuation, []byte("b")))},
		{"a continuation", frame(true, opContinuation, []byte("b"))},
		{"a bad frame", []byte{0x81 | 0x40, 0}},
		{"a frame over the limit", frame(true, opText, payload(200))},
		// 10 + (1<<63 - 1) wraps around in int.
		{"a 63-bit length", []byte{0x81, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
	}
	for _, tt := range falseCases {
		t.Run("false before "+tt.name, func(t *testing.T) {
			c := newConn(newFake(cat(textFrame("first"), tt.next)))
			c.SetReadLimit(100)
			if msg, err := c.Read(); err != nil || string(msg) != "first" {
				t.Fatalf("Read = %q, %v", msg, err)
			}
			if c.Buffered() {
				t.Fatal("Buffered = true")
			}
		})
	}
	t.Run("true after a fragmented message", func(t *testing.T) {
		c := newConn(newFake(cat(frame(false, opText, []byte("a")), frame(true, opContinuation, []byte("b")), textFrame("c"))))
		if msg, err := c.Read(); err != nil || string(msg) != "ab" {
			t.Fatalf("Read = %q, %v", msg, err)
		}
		if !c.Buffered() {
			t.Fatal("Buffered = false before a whole message")
		}
	})
}

func TestReadMessageStable(t *testing.T) {
	first := payload(300)
	f := newFake(cat(frame(true, opText, first), frame(true, opPing, []byte("pp")), textFrame("second")))
	c := newConn(f)
	msg, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	// What the caller may do between two Reads leaves msg alone.
	c.Buffered()
	if err := c.WriteText(t.Context(), payload(1000)); err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	if !bytes.Equal(msg, first) {
		t.Fatal("message changed before the next Read")
	}

	// The same for a message assembled from fragments.
	f = newFake(cat(frame(false, opText, first[:100]), frame(true, opContinuation, first[100:])), cat(frame(true, opPing, []byte("pp")), textFrame("second")))
	c = newConn(f)
	if msg, err = c.Read(); err != nil {
		t.Fatal(err)
	}
	c.Buffered()
	if err := c.WriteText(t.Context(), payload(1000)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg, first) {
		t.Fatal("fragmented message changed before the next Read")
	}
	if msg, err = c.Read(); err != nil || string(msg) != "second" {
		t.Fatalf("next Read = %q, %v", msg, err)
	}
}

func TestReadBufferShrinks(t *testing.T) {
	big := frame(true, opText, payload(200<<10))
	c := newConn(newFake(big, textFrame("small")))
	if msg, err := c.Read(); err != nil || len(msg) != 200<<10 {
		t.Fatalf("Read = %d bytes, %v", len(msg), err)
	}
	if msg, err := c.Read(); err != nil || string(msg) != "small" {
		t.Fatalf("Read = %q, %v", msg, err)
	}
	if len(c.buf) != initialBuf {
		t.Errorf("read buffer is %d bytes after a large message, want %d", len(c.buf), initialBuf)
	}

	f := newFake(cat(frame(false, opText, payload(100<<10)), frame(true, opContinuation, nil)), textFrame("small"))
	c = newConn(f)
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	if cap(c.frag) > maxKeptBuf {
		t.Errorf("fragment buffer of %d bytes kept", cap(c.frag))
	}
}

// readingConn reports that its Read was entered.
type readingConn struct {
	io.ReadWriteCloser
	reading chan struct{}
	once    sync.Once
}

func (r *readingConn) Read(p []byte) (int, error) {
	r.once.Do(func() { close(r.reading) })
	return r.ReadWriteCloser.Read(p)
}

func TestCloseNowUnblocksRead(t *testing.T) {
	leakcheck.Check(t)
	client, server := net.Pipe()
	defer server.Close()
	bc := &readingConn{ReadWriteCloser: client, reading: make(chan struct{})}
	c := newConn(bc)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read()
		done <- err
	}()
	<-bc.reading
	select {
	case err := <-done:
		t.Fatalf("Read returned %v with nothing to read", err)
	default:
	}
	if err := c.CloseNow(); err != nil {
		t.Fatalf("CloseNow: %v", err)
	}
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("Read = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after CloseNow")
	}
	if _, err := c.Read(); err != ErrClosed {
		t.Errorf("next Read = %v, want ErrClosed", err)
	}
	if err := c.CloseNow(); err != nil {
		t.Errorf("second CloseNow = %v, want nil", err)
	}
	// The server's side ends too.
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("server Read = %v, want io.EOF", err)
	}
}
