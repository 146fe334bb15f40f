package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Test helpers: a scripted server side of a connection and frame builders.

// errDry is what a fakeConn in dry mode returns from Read: the test
// expects the Conn not to read at that point.
var errDry = errors.New("fakeConn: read while dry")

// fakeConn is the server's side of a connection: Read hands out chunks in
// order (a chunk may take several reads, never one read for two chunks),
// then returns end (io.EOF when nil); writes are recorded.
type fakeConn struct {
	mu     sync.Mutex
	chunks [][]byte
	end    error
	dry    bool
	reads  int
	out    bytes.Buffer
	writes []int // size of each Write call
	closed bool
}

func newFake(chunks ...[]byte) *fakeConn { return &fakeConn{chunks: chunks} }

// readInBackground reads c until Read fails (answering control frames on
// the way) and sends that error.
func readInBackground(c *Conn) <-chan error {
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Read(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	return readErr
}

func (f *fakeConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	switch {
	case f.closed:
		return 0, net.ErrClosed
	case f.dry:
		return 0, errDry
	}
	for len(f.chunks) > 0 && len(f.chunks[0]) == 0 {
		f.chunks = f.chunks[1:]
	}
	if len(f.chunks) == 0 {
		if f.end != nil {
			return 0, f.end
		}
		return 0, io.EOF
	}
	n := copy(p, f.chunks[0])
	f.chunks[0] = f.chunks[0][n:]
	return n, nil
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	f.out.Write(p)
	f.writes = append(f.writes, len(p))
	return len(p), nil
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeConn) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *fakeConn) remaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.chunks {
		n += len(c)
	}
	return n
}

func (f *fakeConn) setDry(dry bool) {
	f.mu.Lock()
	f.dry = dry
	f.mu.Unlock()
}

// written decodes the frames the client wrote so far.
func (f *fakeConn) written(t *testing.T) []clientFrame {
	t.Helper()
	f.mu.Lock()
	b := bytes.Clone(f.out.Bytes())
	f.mu.Unlock()
	var frames []clientFrame
	for len(b) > 0 {
		fr, rest, err := parseClientFrame(b)
		if err != nil {
			t.Fatalf("client wrote a bad frame: %v (% x)", err, b)
		}
		frames = append(frames, fr)
		b = rest
	}
	return frames
}

// frame encodes a server frame (unmasked) with the shortest length.
func frame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

func textFrame(s string) []byte { return frame(true, opText, []byte(s)) }

func closeFrame(code int, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return frame(true, opClose, append(p, reason...))
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// payload is n bytes of a pattern that shows shifts and swaps.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + i%26 + i/26%7)
	}
	return p
}

// wantClosedWith checks that the client sent one close frame with code
// (and nothing after it) and closed the connection.
func wantClosedWith(t *testing.T, c *Conn, f *fakeConn, code int) {
	t.Helper()
	if !f.isClosed() {
		t.Error("connection not closed")
	}
	select {
	case <-c.Closed():
	default:
		t.Error("Closed() not closed")
	}
	frames := f.written(t)
	if len(frames) == 0 {
		t.Fatalf("no close frame written, want code %d", code)
	}
	last := frames[len(frames)-1]
	if last.op != opClose || len(last.payload) < 2 {
		t.Fatalf("last frame written: op %#x payload % x, want close %d", last.op, last.payload, code)
	}
	if got := int(binary.BigEndian.Uint16(last.payload)); got != code {
		t.Errorf("close code written = %d, want %d", got, code)
	}
}
