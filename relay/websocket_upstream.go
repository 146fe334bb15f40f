package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/wsconn"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// upstream is a connection's pinned upstream socket. It implements
// Upstream: Open reuses the socket while it is on the same account,
// healthy and younger than UpstreamMaxAge, and dials a new one otherwise.
// One turn at a time uses it.
//
// Between turns a reader goroutine reads the socket, so that control
// frames are answered and a closed socket is noticed. The first message of
// a turn hands the read role to the turn: it reads its own events from
// then on (no hand-off per event) and gives the role back when it ends.
type upstream struct {
	h      *wsServer
	header http.Header // the client's handshake headers

	mu       sync.Mutex
	ws       *wsconn.Conn
	account  string
	dialed   time.Time
	first    chan frame    // from the reader: a message (with the read role) or its final error
	resume   chan struct{} // gives the read role back to the reader
	done     chan struct{}
	cancel   context.CancelFunc
	broken   bool
	busy     bool        // a turn uses the socket
	lastUsed time.Time   // when the last turn ended
	idle     *time.Timer // closes the socket when no turn used it for UpstreamIdleTimeout
}

type frame struct {
	data []byte // valid until the socket is read again
	err  error
}

// Open implements Upstream.
func (u *upstream) Open(ctx context.Context, a *scheduler.Account, token string, body []byte) (eventStream, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.stopIdleLocked()
	maxAge := u.h.upstreamMaxAge()
	if u.ws != nil && (u.broken || u.account != a.ID || time.Since(u.dialed) > maxAge) {
		u.closeLocked()
	}
	reused := u.ws != nil
	if !reused {
		if err := u.dialLocked(ctx, a, token); err != nil {
			return nil, err
		}
	}
	role := false
	select {
	case f := <-u.first:
		if f.err == nil {
			role = true // a message outside any turn, dropped; the turn reads now
			break
		}
		// The socket ended between turns (the upstream closed an idle
		// one): this turn gets a new one.
		u.closeLocked()
		reused = false
		if err := u.dialLocked(ctx, a, token); err != nil {
			return nil, err
		}
	default:
	}
	if err := u.ws.WriteText(ctx, body); err != nil {
		u.closeLocked()
		if !reused || ctx.Err() != nil {
			return nil, err
		}
		// The idle socket had died and the write found out: once more on
		// a new one.
		reused, role = false, false
		if err := u.dialLocked(ctx, a, token); err != nil {
			return nil, err
		}
		if err := u.ws.WriteText(ctx, body); err != nil {
			u.closeLocked()
			return nil, err
		}
	}
	u.busy = true
	s := &stream{u: u, ws: u.ws, first: u.first, resume: u.resume, role: role, reused: reused, ctx: ctx, acct: a, token: token, body: body}
	s.stop = context.AfterFunc(ctx, s.drop)
	return s, nil
}

func (u *upstream) dialLocked(ctx context.Context, a *scheduler.Account, token string) error {
	// The HTTP relay's policy, ForwardHeaders included; the handshake's
	// own headers (Upgrade, Sec-WebSocket-*) are hop-by-hop or not listed.
	hdr := http.Header{}
	headers.Forward(hdr, u.header, u.h.relay.ForwardHeaders)
	for k, vs := range a.Header {
		hdr[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	setAuth(hdr, a, token, u.h.relay.bearer)
	hdr.Set("OpenAI-Beta", betaHeader)
	if !u.h.takeSocket(a) {
		return errSocketCap
	}
	ws, err := wsconn.Dial(ctx, u.h.dialClient(), wsURL(a), hdr)
	if err != nil {
		u.h.giveSocket(a.ID)
		var he *wsconn.HandshakeError
		if errors.As(err, &he) && he.Status >= 400 {
			return &UpstreamError{Status: he.Status, Header: he.Header, Body: he.Body, Err: err}
		}
		return err
	}
	ws.SetReadLimit(int64(u.h.relay.maxEventBytes()))
	rctx, cancel := context.WithCancel(context.Background())
	u.ws, u.account, u.dialed, u.broken, u.cancel = ws, a.ID, time.Now(), false, cancel
	u.first, u.resume, u.done = make(chan frame, 1), make(chan struct{}, 1), make(chan struct{})
	go u.readLoop(rctx, ws, u.first, u.resume, u.done)
	go keepAlive(rctx, ws, u.h)
	return nil
}

// readLoop reads the socket while no turn does. A message hands the read
// role to the turn that receives it from first; the loop waits for it back
// on resume. An error ends the loop (first gets it).
func (u *upstream) readLoop(ctx context.Context, ws *wsconn.Conn, first chan<- frame, resume <-chan struct{}, done chan struct{}) {
	defer close(done)
	for {
		data, err := ws.Read()
		if err != nil {
			if ctx.Err() != nil {
				err = errUpstreamClosed
			}
			first <- frame{err: err} // never blocks: first is empty while the loop reads
			return
		}
		first <- frame{data: data}
		select {
		case <-resume:
		case <-ctx.Done():
			return
		}
	}
}

func (u *upstream) close() {
	u.mu.Lock()
	u.stopIdleLocked()
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
	u.h.giveSocket(u.account)
	u.ws, u.account, u.first, u.resume, u.done = nil, "", nil, nil, nil
}

// stream is one turn's events on the pinned socket.
type stream struct {
	u      *upstream
	ws     *wsconn.Conn
	first  <-chan frame
	resume chan<- struct{}
	role   bool   // the turn reads the socket itself
	reused bool   // the socket served an earlier turn
	last   []byte // the message Next returned last
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

// Pending reports that a message is already read, so Next will not wait.
func (s *stream) Pending() bool {
	if s.role {
		return s.ws.Buffered()
	}
	return len(s.first) > 0
}

// Next returns the next message. An "error" frame is the last of its
// turn: the upstream sends nothing more for it.
func (s *stream) Next() ([]byte, error) {
	if s.ended {
		return nil, io.EOF
	}
	s.last = nil
	var data []byte
	if s.role {
		d, err := s.ws.Read()
		if err != nil {
			return s.readFailed(err)
		}
		data = d
	} else {
		var f frame
		select {
		case f = <-s.first: // a message is waiting: no full select
		default:
			select {
			case f = <-s.first:
			case <-s.ctx.Done():
				s.broken = true
				return nil, s.ctx.Err()
			}
		}
		if f.err != nil {
			return s.readFailed(f.err)
		}
		s.role, data = true, f.data
	}
	s.last = data
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
			// upstream refused the turn with a status. A socket whose
			// credentials were refused is not used again: the next
			// attempt dials with the token of its time.
			if st == http.StatusUnauthorized {
				s.broken = true
			}
			return nil, &UpstreamError{Status: int(st), Header: frameHeaders(data), Body: errorBody(data)}
		}
	}
	s.started = true
	return data, nil
}

// readFailed handles a read error. A socket kept from an earlier turn that
// ends before this turn's first message had died while idle (the upstream
// closed it, or the close crossed the request): the turn is sent once more
// on a new socket to the same account instead of counting against it.
func (s *stream) readFailed(err error) ([]byte, error) {
	if s.ctx.Err() != nil {
		s.broken = true
		return nil, s.ctx.Err()
	}
	if s.reused && !s.started && s.redials == 0 && staleSocket(err) {
		s.redials++
		s.reused = false
		if err := s.redial(); err != nil {
			s.broken = true
			return nil, err
		}
		return s.Next()
	}
	s.broken = true
	return nil, err
}

// staleSocket tells a socket that died while idle (cut, or closed as a
// server closes idle sockets: 1000, 1001) from one whose upstream refused
// or broke on this turn's message (another close code, a protocol
// violation, a message over the read limit).
func staleSocket(err error) bool {
	var ce *wsconn.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case 1000, 1001, 1005:
			return true
		}
		return false
	}
	var pe *wsconn.ProtocolError
	return !errors.Is(err, wsconn.ErrTooBig) && !errors.As(err, &pe)
}

func (s *stream) redial() error {
	u := s.u
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeLocked()
	if err := u.dialLocked(s.ctx, s.acct, s.token); err != nil {
		return err
	}
	s.ws, s.first, s.resume, s.role, s.last = u.ws, u.first, u.resume, false, nil
	return u.ws.WriteText(s.ctx, s.body)
}

// Close ends the turn. The read role goes back to the reader when the turn
// read through its terminal event; a socket that failed, or whose turn
// stopped early with events still coming, is dropped so the next turn
// dials again.
func (s *stream) Close() error {
	s.stop()
	defer func() {
		s.u.mu.Lock()
		s.u.armIdleLocked()
		s.u.mu.Unlock()
	}()
	if s.broken || s.ctx.Err() != nil || (s.role && !s.ended && !isTerminal(s.last)) {
		s.drop()
		return nil
	}
	if s.role {
		s.role = false
		s.resume <- struct{}{} // never blocks: the reader waits for it
	}
	return nil
}

// drop closes the socket the turn uses, so that a read in progress ends,
// and marks it broken if it is still the pinned one. It may run late, on
// the goroutine of the turn's context: by then the next attempt may have
// pinned another socket, which it must leave alone.
func (s *stream) drop() {
	u := s.u
	u.mu.Lock()
	ws := s.ws
	if u.ws == ws {
		u.broken = true
	}
	u.mu.Unlock()
	ws.CloseNow()
}

func isTerminal(data []byte) bool {
	return data != nil && event.Classify(data).Kind == event.KindTerminal
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

// wsURL is the Responses socket of an account's BaseURL (http or https;
// the handshake is an HTTP request).
func wsURL(a *scheduler.Account) string {
	u := strings.TrimRight(a.BaseURL, "/") + "/responses"
	if len(a.Query) > 0 {
		u += "?" + a.Query.Encode()
	}
	return u
}
