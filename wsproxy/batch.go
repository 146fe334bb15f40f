package wsproxy

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
// holding the socket's writes while the burst lasts (relay's batch sink:
// SendBuffered, then Flush once the upstream has nothing more ready).

// batchConn is the client's hijacked connection. While held, writes are
// kept in memory; release writes them out in one go. Control frames the
// library writes meanwhile (pongs) wait for the same release, which comes
// before the relay could block on the upstream.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
	err  error // a failed write; later writes fail too
	// closed is set once the library wrote a close frame (its answer to
	// the client's, or its own): no data frame may follow (RFC 6455 §5.5.1),
	// so the relay's next event fails as if the client were gone, even
	// before the library's reader reports the close.
	closed bool
}

// errCloseSent fails event writes after the close frame went out.
var errCloseSent = errors.New("websocket close frame sent")

// maxHeld flushes a long burst early, bounding the memory it takes.
const maxHeld = 64 << 10

// Write is the library's: it writes only control frames here (the relay
// writes its events and error frames with writeText), each whole in one
// call, so a first byte of 0x88 (FIN, opcode close) is a close frame.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(p) > 0 && p[0] == 0x88 {
		// The close frame goes out at once, after what is held: no event
		// will come to release it.
		c.closed, c.held = true, false
		c.buf = append(c.buf, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if !c.held {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxHeld {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// writeText writes one text message as a single unmasked frame (the
// relay's events and error frames; the library writes control frames).
// Built here rather than through the library: its per-message write takes
// two channel-based locks, most of the cost of forwarding an event. The
// frame goes out whole under mu, so it cannot interleave with a frame the
// library writes, which reaches Write whole too (a control frame is at
// most 131 bytes, flushed at once). With flush, everything held goes out.
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
