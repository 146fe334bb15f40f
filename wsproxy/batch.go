package wsproxy

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// The WebSocket library flushes every message to the socket. A turn's
// events often arrive from the upstream in bursts; the relay writes a
// burst to the client with one system call instead of one per event by
// holding the socket's bytes while the burst lasts (relay's batch sink:
// SendBuffered, then Flush once the upstream has nothing more ready).
// Every frame is the library's, written through its public API; holding
// delays bytes but never reorders or splits them, so nothing here depends
// on how the library frames or splits its writes.

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
}

// maxHeld flushes a long burst early, bounding the memory it takes.
const maxHeld = 64 << 10

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
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

// Close writes out what is held before it closes: the library closes the
// connection right after its close frame when the client's came first, and
// that frame must not die in the buffer.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.held = false
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
