package relay

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// NewTransport returns the default upstream transport: HTTP/2 when the
// upstream offers it, many idle connections per host (a relay talks to few
// hosts a lot), no transparent compression (SSE is relayed as it comes).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	// Each open stream keeps its connection's buffers: small ones keep an
	// idle stream's memory down (BENCHMARKS.md). Larger writes (a big
	// request body) go around them, and a burst of events is read ahead
	// through a pooled buffer (burstConn), so that the small read buffer
	// does not cost a read system call per kilobyte of a burst.
	t.ReadBufferSize = 1 << 10
	t.WriteBufferSize = 1 << 10
	dial := (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newBurstConn(c), nil
	}
	return t
}

// burstSize is the read-ahead buffer of a burstConn: a burst of events is
// read this much per system call.
const burstSize = 16 << 10

var burstBuffers = sync.Pool{New: func() any { b := make([]byte, burstSize); return &b }}

// burstConn reads ahead while data keeps coming and holds no buffer of
// its own while the connection waits.
//
// The transport reads a connection through a small buffer (ReadBufferSize,
// kept small for idle streams), one read system call per fill. When a read
// fills the caller's buffer, more is probably waiting: the next read first
// tries, without waiting, to take everything waiting into a pooled buffer,
// and serves reads from it until it is empty, when it goes back to the
// pool. When nothing is waiting it reads into the caller's buffer as a
// plain connection would, so a connection that waits (an idle stream)
// waits with no read-ahead buffer.
type burstConn struct {
	net.Conn
	raw  syscall.RawConn // nil: no read-ahead (not a socket)
	buf  *[]byte         // read ahead, not yet read; nil when none
	r, w int             // (*buf)[r:w] is unread
	full bool            // the last read filled its buffer, or read ahead
}

func newBurstConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok || !readAheadSupported {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &burstConn{Conn: c, raw: raw}
}

func (c *burstConn) Read(p []byte) (int, error) {
	if c.buf == nil && c.full && len(p) < burstSize {
		if err := c.readAhead(); err != nil {
			return 0, err
		}
	}
	if c.buf != nil {
		n := copy(p, (*c.buf)[c.r:c.w])
		if c.r += n; c.r == c.w {
			burstBuffers.Put(c.buf)
			c.buf = nil
		}
		return n, nil
	}
	n, err := c.Conn.Read(p)
	c.full = n == len(p)
	return n, err
}

// readAhead takes what is waiting on the socket into a pooled buffer
// without waiting for more. Nothing waiting (or the end of the stream,
// which the next plain read reports) leaves c.buf nil; an error is
// returned as a plain read would return it.
func (c *burstConn) readAhead() error {
	b := burstBuffers.Get().(*[]byte)
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, rerr = readNow(fd, *b)
		return true // done, or nothing waiting: never wait here
	})
	// While the read ahead finds data the burst goes on: the next read
	// looks ahead again, and only one that finds nothing waits.
	c.full = n > 0
	if n > 0 {
		c.buf, c.r, c.w = b, 0, n
		return nil
	}
	burstBuffers.Put(b)
	if err == nil && rerr != nil && !errors.Is(rerr, errNothingWaiting) {
		err = os.NewSyscallError("read", rerr)
	}
	if err != nil {
		return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return nil
}
