package wsproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// upstream is a connection's pinned upstream socket. It implements
// relay.Upstream: Open reuses the socket while it is on the same account,
// healthy and younger than UpstreamMaxAge, and dials a new one otherwise.
// One turn at a time uses it.
type upstream struct {
	h      *Handler
	header http.Header // the client's handshake headers

	mu      sync.Mutex
	ws      *websocket.Conn
	account string
	dialed  time.Time
	frames  chan frame  // from the socket's reader goroutine
	free    chan []byte // frame buffers the turn is done with, for the reader
	done    chan struct{}
	cancel  context.CancelFunc
	broken  bool
}

type frame struct {
	buf *[]byte // the message, in a buffer from frameBufs
	err error
}

// forwardHeaders are client handshake headers passed to the upstream.
var forwardHeaders = []string{"User-Agent", "Originator", "Session_id", "Session-Id", "Conversation_id",
	"X-Client-Request-Id", "X-Codex-Turn-State", "X-Codex-Turn-Metadata", "X-Codex-Window-Id", "X-Codex-Beta-Features"}

// Open implements relay.Upstream.
func (u *upstream) Open(ctx context.Context, a *scheduler.Account, token string, body []byte) (relay.EventStream, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	maxAge := orDefault(u.h.UpstreamMaxAge, DefaultUpstreamMaxAge)
	if u.ws != nil && (u.broken || u.account != a.ID || time.Since(u.dialed) > maxAge) {
		u.closeLocked()
	}
	if u.ws == nil {
		if err := u.dialLocked(ctx, a, token); err != nil {
			return nil, err
		}
	}
	// Frames left from an earlier turn (none are expected) must not be
	// taken for this turn's.
	for drained := false; !drained; {
		select {
		case f := <-u.frames:
			if f.err != nil {
				u.closeLocked()
				return nil, f.err
			}
			putFrameBuf(f.buf)
		default:
			drained = true
		}
	}
	if err := u.ws.Write(ctx, websocket.MessageText, body); err != nil {
		u.closeLocked()
		return nil, err
	}
	s := &stream{u: u, frames: u.frames, ctx: ctx, acct: a, token: token, body: body}
	s.stop = context.AfterFunc(ctx, func() { s.u.markBroken() })
	return s, nil
}

func (u *upstream) dialLocked(ctx context.Context, a *scheduler.Account, token string) error {
	hdr := http.Header{}
	for _, k := range forwardHeaders {
		if headerHasToken(u.header, "Connection", k) {
			continue // hop-by-hop by the client's own word
		}
		if vs := u.header.Values(k); len(vs) > 0 {
			hdr[http.CanonicalHeaderKey(k)] = vs
		} else if vs := u.header[k]; len(vs) > 0 {
			hdr[k] = vs
		}
	}
	for k, vs := range a.Header {
		hdr[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	hdr.Set("OpenAI-Beta", BetaHeader)
	ws, resp, err := websocket.Dial(ctx, wsURL(a.BaseURL), &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: u.h.HTTPClient})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			}
			return &relay.UpstreamError{Status: resp.StatusCode, Header: resp.Header, Body: body, Err: err}
		}
		return err
	}
	ws.SetReadLimit(orDefault(u.h.ReadLimit, DefaultReadLimit))
	rctx, cancel := context.WithCancel(context.Background())
	u.ws, u.account, u.dialed, u.broken, u.cancel = ws, a.ID, time.Now(), false, cancel
	u.frames, u.done = make(chan frame, 16), make(chan struct{})
	go u.readLoop(rctx, ws, u.frames, u.done)
	go keepAlive(rctx, ws, u.h)
	return nil
}

// readLoop reads the upstream socket for its whole life, so that control
// frames are answered between turns too. Each message is read into a
// buffer from frameBufs, which the turn gives back once done with it, so
// that events cost no allocation and an idle connection keeps no buffer.
func (u *upstream) readLoop(ctx context.Context, ws *websocket.Conn, out chan<- frame, done chan struct{}) {
	defer close(done)
	for {
		b := frameBufs.Get().(*[]byte)
		// Background, not ctx: a cancellable context costs coder/websocket
		// a timer per read. closeLocked cancels ctx and closes the socket,
		// which ends this Read.
		data, err := readMessage(ws, (*b)[:0])
		if err != nil {
			putFrameBuf(b)
			if ctx.Err() != nil {
				err = errUpstreamClosed
			}
			select {
			case out <- frame{err: err}:
			case <-ctx.Done():
			}
			return
		}
		*b = data // keep a grown buffer
		select {
		case out <- frame{buf: b}:
		case <-ctx.Done():
			return
		}
	}
}

// Frame buffers start at frameBufSize; one grown past maxFrameBuf (a huge
// event) is not reused, so it does not stay pinned.
const (
	frameBufSize = 2 << 10
	maxFrameBuf  = 256 << 10
)

// frameBufs recycle message buffers across connections and turns.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, frameBufSize); return &b }}

func putFrameBuf(b *[]byte) {
	if b == nil || cap(*b) > maxFrameBuf {
		return
	}
	*b = (*b)[:0]
	frameBufs.Put(b)
}

// readMessage reads the next data message into buf.
func readMessage(ws *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := ws.Reader(context.Background())
	if err != nil {
		return nil, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (u *upstream) markBroken() {
	u.mu.Lock()
	u.broken = true
	if u.ws != nil {
		u.ws.CloseNow()
	}
	u.mu.Unlock()
}

func (u *upstream) close() {
	u.mu.Lock()
	u.closeLocked()
	u.mu.Unlock()
}

func (u *upstream) closeLocked() {
	if u.ws == nil {
		return
	}
	u.cancel()
	u.ws.CloseNow()
	<-u.done
	u.ws, u.account, u.frames, u.done = nil, "", nil, nil
}

// stream is one turn's events on the pinned socket.
type stream struct {
	u      *upstream
	frames <-chan frame
	last   *[]byte // the frame Next returned last, given back on the next call
	ctx    context.Context
	stop   func() bool
	ended  bool // an error frame ended the turn
	broken bool
	// What a redial needs when the upstream says the socket is too old.
	acct    *scheduler.Account
	token   string
	body    []byte
	started bool
	redials int
}

// Pending reports that a frame is already queued, so Next will not wait.
func (s *stream) Pending() bool { return len(s.frames) > 0 }

// Next returns the next frame. An "error" frame is the last of its turn:
// the upstream sends nothing more for it.
func (s *stream) Next() ([]byte, error) {
	if s.ended {
		return nil, io.EOF
	}
	putFrameBuf(s.last)
	s.last = nil
	var f frame
	select {
	case f = <-s.frames: // a frame is waiting: no full select
	default:
		select {
		case f = <-s.frames:
		case <-s.ctx.Done():
			s.broken = true
			return nil, s.ctx.Err()
		}
	}
	if f.err != nil {
		s.broken = true
		return nil, f.err
	}
	s.last = f.buf
	data := *f.buf
	if event.IsError(data) {
		if !s.started && s.redials == 0 && gjson.GetBytes(data, "error.code").String() == "websocket_connection_limit_reached" {
			// The socket reached the upstream's age limit before our own
			// reconnect did: send the turn again on a new one.
			s.redials++
			if err := s.redial(); err != nil {
				s.broken = true
				return nil, err
			}
			return s.Next()
		}
		s.ended = true
		if st := gjson.GetBytes(data, "status").Int(); st >= 400 && !gjson.GetBytes(data, "sequence_number").Exists() {
			// An error frame in place of a response (429, 401): the
			// upstream refused the turn with a status.
			return nil, &relay.UpstreamError{Status: int(st), Header: frameHeaders(data), Body: errorBody(data)}
		}
	}
	s.started = true
	return data, nil
}

func (s *stream) redial() error {
	u := s.u
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeLocked()
	if err := u.dialLocked(s.ctx, s.acct, s.token); err != nil {
		return err
	}
	putFrameBuf(s.last)
	s.frames, s.last = u.frames, nil
	return u.ws.Write(s.ctx, websocket.MessageText, s.body)
}

// Close ends the turn; a socket that failed is dropped so the next turn
// dials again.
func (s *stream) Close() error {
	s.stop()
	putFrameBuf(s.last)
	s.last = nil
	if s.broken || s.ctx.Err() != nil {
		s.u.markBroken()
	}
	return nil
}

// frameHeaders reads the "headers" object an upstream error frame carries
// (rate-limit and reset headers, lower-case names) as an http.Header.
func frameHeaders(f []byte) http.Header {
	hs := gjson.GetBytes(f, "headers")
	if !hs.IsObject() {
		return nil
	}
	h := http.Header{}
	hs.ForEach(func(k, v gjson.Result) bool {
		h.Set(k.String(), v.String())
		return true
	})
	return h
}

// errorBody turns an error frame into an {"error":{...}} body.
func errorBody(f []byte) []byte {
	inner := gjson.GetBytes(f, "error").Raw
	if inner == "" {
		return nil
	}
	return []byte(`{"error":` + inner + `}`)
}

// wsURL maps an account's BaseURL (http/https) to its Responses socket.
func wsURL(base string) string {
	base = strings.TrimRight(base, "/") + "/responses"
	switch {
	case strings.HasPrefix(base, "https://"):
		return "wss://" + base[len("https://"):]
	case strings.HasPrefix(base, "http://"):
		return "ws://" + base[len("http://"):]
	}
	return base
}
