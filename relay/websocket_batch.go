package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
)

// The WebSocket library flushes every message to the socket. A turn's
// events often arrive from the upstream in bursts; the relay writes a
// burst to the client with one system call instead of one per event by
// holding the socket's bytes while the burst lasts (relay's batch sink:
// SendBuffered, then Flush once the upstream has nothing more ready).
//
// The relay writes its events and error frames itself (writeText): the
// library's per-message write takes two channel-based locks and a flush,
// 8 % of WebSocket throughput at 64 clients. The library writes only
// control frames (pongs, its close) on this socket. batchConn owns the
// framing of the byte stream: it reads the frame headers of what the
// library writes and keeps a library frame back until its last byte has
// come, however the library splits its writes, so a relay frame can only
// go out between whole library frames; a close frame is known by its
// parsed opcode, after which no relay frame may follow (RFC 6455 §5.5.1).

// batchConn is the client's hijacked connection. While held, writes are
// kept in memory; release writes them out in one go. Frames the library
// writes meanwhile (pongs, a close) wait for the same release, which comes
// before the relay could block on the upstream.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
	err  error // a failed write; later writes fail too
	// lib is the library frame still arriving: its bytes so far.
	lib []byte
	// closed is set once the library's close frame is complete: no relay
	// frame may follow, so the next event fails as if the client were
	// gone, even before the library's reader reports the close.
	closed bool
}

// errCloseSent fails event writes after the close frame went out.
var errCloseSent = errors.New("websocket close frame sent")

// maxHeld flushes a long burst early, bounding the memory it takes.
const maxHeld = 64 << 10

// Write takes the library's bytes: whole frames join the stream (a close
// frame goes out at once, after what is held: no event will come to
// release it), a partial one waits for the rest.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.lib = append(c.lib, p...)
	for {
		n, op := frameLen(c.lib)
		if n == 0 || n > len(c.lib) {
			break
		}
		c.buf = append(c.buf, c.lib[:n]...)
		c.lib = c.lib[n:]
		if op == 0x8 {
			c.closed, c.held = true, false
		}
	}
	if len(c.lib) == 0 {
		c.lib = nil
	}
	if !c.held || len(c.buf) >= maxHeld {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// frameLen reads the header at the start of b (RFC 6455 §5.2): the whole
// frame's length and its opcode, or 0 while the header is incomplete.
func frameLen(b []byte) (n int, opcode byte) {
	if len(b) < 2 {
		return 0, 0
	}
	hdr, size := 2, uint64(b[1]&0x7F)
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, 0
		}
		hdr, size = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0, 0
		}
		hdr, size = 10, binary.BigEndian.Uint64(b[2:])
	}
	if b[1]&0x80 != 0 {
		hdr += 4 // a masking key
	}
	if size > 1<<40 {
		size = 1 << 40 // never a frame the library writes; keep the sum sane
	}
	return hdr + int(size), b[0] & 0x0F
}

// writeText writes one text message as a single unmasked frame (the
// relay's events and error frames). The frame goes out whole under mu,
// between whole library frames. With flush, everything held goes out.
func (c *batchConn) writeText(payload []byte, flush bool) error {
	var hdr [10]byte
	n := textFrameHeader(hdr[:], len(payload))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return errCloseSent
	}
	c.buf = append(c.buf, hdr[:n]...)
	c.buf = append(c.buf, payload...)
	if flush {
		c.held = false
	}
	if !c.held || len(c.buf) >= maxHeld {
		return c.flushLocked()
	}
	return nil
}

// textFrameHeader writes the header of a final, unmasked text frame of
// size bytes (RFC 6455 §5.2) into b and returns its length.
func textFrameHeader(b []byte, size int) int {
	b[0] = 0x80 | 0x1 // FIN, opcode text
	switch {
	case size < 126:
		b[1] = byte(size)
		return 2
	case size <= 0xFFFF:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(size))
		return 4
	}
	b[1] = 127
	binary.BigEndian.PutUint64(b[2:], uint64(size))
	return 10
}

// Close writes out what is held before it closes: the library closes the
// connection right after its close frame when the client's came first, and
// that frame must not die in the buffer.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.held = false
	c.buf = append(c.buf, c.lib...) // an unfinished frame, as far as it came
	c.lib = nil
	c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// hold starts keeping writes back.
func (c *batchConn) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release writes out what was held and stops holding.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if cap(c.buf) > maxHeld {
		c.buf = nil // a burst past the cap: do not keep its memory
	}
	if err != nil {
		c.err = err
	}
	return err
}

// batchWriter hands the WebSocket library a hijacked connection that can
// hold its writes.
type batchWriter struct {
	http.ResponseWriter
	conn *batchConn
}

func (w *batchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes net/http still buffers (the 101 response) go first, as the
	// library's own writer would have sent them.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: nc}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, brw.Writer.Size())), nil
}

func (w *batchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
