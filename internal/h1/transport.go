// Package h1 is an HTTP/1.1 client for cleartext upstreams that keeps no
// goroutine of its own: a request is written and its answer read on the
// caller's goroutine, and an idle pooled connection is only a socket and a
// small read buffer.
//
// net/http's transport gives every connection a read loop and a write
// loop goroutine and hands each request and answer between them and the
// caller: three goroutine switches per request, and two goroutines and
// their buffers held for as long as a stream stays open. A relay's
// upstream requests are simple (a method, headers, a body held in memory
// and replayable) and its streams long, so it pays for neither.
//
// Transport handles only http:// URLs with no proxy in the way; every
// other request goes to its Fallback.
package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Transport's zero fields.
const (
	defaultMaxIdlePerHost   = 256
	defaultIdleTimeout      = 90 * time.Second
	defaultMaxHeaderBytes   = 1 << 20
	defaultReadBufferSize   = 1 << 10
	defaultDialTimeout      = 30 * time.Second
	defaultDialKeepAlive    = 30 * time.Second
	writeBufferSize         = 4 << 10
	maxInformationalAnswers = 5
)

// Transport is an http.RoundTripper for HTTP/1.1 over cleartext TCP. The
// zero value is not usable: Fallback must be set.
type Transport struct {
	// Fallback sends the requests Transport does not: any scheme but
	// http, and any request a proxy would carry (Proxy says so).
	Fallback http.RoundTripper

	// Proxy, as in http.Transport: a request it gives a proxy for goes to
	// Fallback. nil: no request has a proxy.
	Proxy func(*http.Request) (*url.URL, error)

	// DialContext dials the upstream. nil: a net.Dialer with a 30 s
	// timeout and 30 s keep-alives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// MaxIdlePerHost bounds the idle connections kept per host. 0: 256.
	MaxIdlePerHost int

	// IdleTimeout closes a connection idle this long. 0: 90 s.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds an answer's status line and headers. 0: 1 MiB.
	MaxHeaderBytes int

	// ReadBufferSize is each connection's read buffer. 0: 1 KiB. Reads
	// larger than it go around it.
	ReadBufferSize int

	mu    sync.Mutex
	idle  map[string][]*conn
	sweep *time.Timer
}

// New is a Transport with fb's proxy, dialer, idle limits, read buffer
// size and answer head limit (fb's 0 is 1 MiB here, where net/http allows
// 10 MB), and fb as its Fallback.
func New(fb *http.Transport) *Transport {
	return &Transport{Fallback: fb, Proxy: fb.Proxy, DialContext: fb.DialContext,
		MaxIdlePerHost: fb.MaxIdleConnsPerHost, IdleTimeout: fb.IdleConnTimeout,
		MaxHeaderBytes: int(min(fb.MaxResponseHeaderBytes, 1<<30)), ReadBufferSize: fb.ReadBufferSize}
}

// conn is one upstream connection.
type conn struct {
	t      *Transport
	key    string
	nc     net.Conn
	lim    limitedConn
	br     *bufio.Reader
	idleAt time.Time
}

// limitedConn is what a connection's read buffer reads through: while
// left is positive, at most left more bytes (an answer's head), else
// unbounded.
type limitedConn struct {
	nc      net.Conn
	left    int
	limited bool
}

var errHeaderTooLarge = errors.New("h1: upstream answer's head exceeds MaxHeaderBytes")

func (l *limitedConn) Read(p []byte) (int, error) {
	if !l.limited {
		return l.nc.Read(p)
	}
	if l.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.nc.Read(p)
	l.left -= n
	return n, err
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}

// RoundTrip sends req over a pooled or new connection and reads its
// answer's head. The answer's body reads from the connection directly;
// the connection goes back to the pool when the body has been read to its
// end, and is closed when the body is closed before that or when req's
// context ends first.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.Fallback.RoundTrip(req)
	}
	ctx := req.Context()
	key := hostKey(req)
	for attempt := 0; ; attempt++ {
		c, reused := t.get(key)
		if c == nil {
			var err error
			if c, err = t.dial(ctx, key); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		if reused && attempt == 0 && ctx.Err() == nil && retryable(req, err) {
			if again, rerr := rewind(req); rerr == nil {
				req = again
				continue
			}
		}
		closeBody(req)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

// handles says whether req is Transport's to send.
func (t *Transport) handles(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		return false
	}
	if t.Proxy != nil {
		if u, err := t.Proxy(req); err != nil || u != nil {
			return false
		}
	}
	return true
}

// hostKey is req's host with its port: the pool's key and the address
// dialed.
func hostKey(req *http.Request) string {
	h := req.URL.Host
	if _, _, err := net.SplitHostPort(h); err != nil {
		return net.JoinHostPort(strings.Trim(h, "[]"), "80")
	}
	return h
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// rewind is req with a fresh body to send again on another connection.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("h1: body not replayable")
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r := *req
	r.Body = b
	return &r, nil
}

// retryable says whether req may go again on a new connection after err
// on a pooled one, by net/http's transport's rule: when none of it was
// written, or when it failed before its answer's first byte and is
// replayable (an idempotent method or an Idempotency-Key). A POST the
// upstream may have begun to serve is not sent twice.
func retryable(req *http.Request, err error) bool {
	var se *sendError
	if !errors.As(err, &se) {
		return false
	}
	return se.nothingWritten || replayable(req)
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// sendError is an error before any byte of an answer was read.
type sendError struct {
	error
	nothingWritten bool
}

func (e *sendError) Unwrap() error { return e.error }

func (t *Transport) dial(ctx context.Context, key string) (*conn, error) {
	dial := t.DialContext
	if dial == nil {
		d := &net.Dialer{Timeout: defaultDialTimeout, KeepAlive: defaultDialKeepAlive}
		dial = d.DialContext
	}
	// A dial runs deeper than a relay's turn may (its goroutine's stack
	// stays at 8 KiB for as long as a stream is open); it runs on a
	// goroutine of its own, once per connection. Not hookcall.Go: its
	// goroutine takes a host call's 16 KiB of stack, which a dial does not
	// need and TestStreamStackStays8KiB's process forbids.
	type dialed struct {
		nc  net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		nc, err := dial(ctx, "tcp", key)
		ch <- dialed{nc, err}
	}()
	d := <-ch
	nc, err := d.nc, d.err
	if err != nil {
		return nil, err
	}
	size := t.ReadBufferSize
	if size <= 0 {
		size = defaultReadBufferSize
	}
	c := &conn{t: t, key: key, nc: nc}
	c.lim.nc = nc
	c.br = bufio.NewReaderSize(&c.lim, size)
	return c, nil
}

func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.nc.Close()
		return nil, err
	}
	bw := writers.Get().(*bufio.Writer)
	cw := countingWriter{w: c.nc}
	bw.Reset(&cw)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	if err != nil {
		return fail(&sendError{err, cw.n == 0})
	}
	max := c.t.MaxHeaderBytes
	if max <= 0 {
		max = defaultMaxHeaderBytes
	}
	c.lim.limited, c.lim.left = true, max
	// An answer that fails before its first byte may be retried
	// (retryable); once bytes came, it is the answer's error.
	if _, err := c.br.Peek(1); err != nil {
		return fail(&sendError{error: err})
	}
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("h1: upstream switched protocols unasked"))
		}
		if i >= maxInformationalAnswers {
			return fail(errors.New("h1: too many informational answers"))
		}
	}
	c.lim.limited = false
	reuse := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.done(stop, reuse)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, c: c, ctx: ctx, stop: stop, reuse: reuse}
	return resp, nil
}

// countingWriter counts what reached the connection.
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// done ends a connection's exchange: back to the pool when reuse holds
// and req's context had not closed it.
func (c *conn) done(stop func() bool, reuse bool) {
	if !stop() || !reuse {
		c.nc.Close()
		return
	}
	c.t.put(c)
}

// body is an answer's body; its end gives the connection back.
type body struct {
	rc    io.ReadCloser
	c     *conn
	ctx   context.Context
	stop  func() bool
	reuse bool
	ended atomic.Bool // read to its end, or closed
}

// Read is called by one goroutine at a time, as any io.Reader; Close may
// run beside it (it closes the connection under the Read).
func (b *body) Read(p []byte) (int, error) {
	if b.ended.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		if b.ended.CompareAndSwap(false, true) {
			b.c.done(b.stop, b.reuse)
		}
	} else if err != nil && b.ctx.Err() != nil {
		err = b.ctx.Err() // the context closed the connection
	}
	return n, err
}

func (b *body) Close() error {
	if b.ended.CompareAndSwap(false, true) {
		b.stop()
		b.c.nc.Close()
	}
	return nil
}

// get takes the most recently used idle connection to key that is still
// open, closing the ones idle past IdleTimeout or closed by the upstream.
func (t *Transport) get(key string) (*conn, bool) {
	for {
		t.mu.Lock()
		list := t.idle[key]
		if len(list) == 0 {
			t.mu.Unlock()
			return nil, false
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[key] = list[:len(list)-1]
		t.mu.Unlock()
		if time.Since(c.idleAt) < t.idleTimeout() && alive(c.nc) {
			return c, true
		}
		c.nc.Close()
	}
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return defaultIdleTimeout
}

func (t *Transport) put(c *conn) {
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = defaultMaxIdlePerHost
	}
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.idle[c.key]) >= max || c.br.Buffered() > 0 {
		c.nc.Close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	t.idle[c.key] = append(t.idle[c.key], c)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleTimeout(), t.sweepIdle)
	}
}

// sweepIdle closes the connections idle past IdleTimeout, and runs again
// while any are left.
func (t *Transport) sweepIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep = nil
	now := time.Now()
	for key, list := range t.idle {
		kept := list[:0]
		for _, c := range list {
			if now.Sub(c.idleAt) >= t.idleTimeout() {
				c.nc.Close()
				continue
			}
			kept = append(kept, c)
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
	if len(t.idle) > 0 {
		t.sweep = time.AfterFunc(t.idleTimeout(), t.sweepIdle)
	}
}

// CloseIdleConnections closes the pooled connections, and the Fallback's.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	for _, list := range t.idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
	t.idle = nil
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	if ci, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
