package relaytest

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/relaykit/responsesrelay/internal/wsconn"
	"github.com/tidwall/gjson"
)

// The WebSocket mode: GET {prefix}/v1/responses upgraded, one
// response.create message per turn, each event a text message carrying the
// JSON an SSE data: line would carry.

const (
	statusUpgraded  = "upgraded"
	methodWS        = "WS"
	defaultWSMaxAge = 60 * time.Minute
)

// WSConns is the number of WebSocket connections to account open right now.
// A connection counts from just before its 101 response is written until
// the last turn on it has been recorded in Served.
func (u *Upstream) WSConns(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a := u.accounts[account]; a != nil {
		return a.wsConns
	}
	return 0
}

// WSURL is the WebSocket URL of account's responses endpoint:
// BaseURL(account)+"/responses" with the scheme ws:// (wss:// for a TLS
// server).
func (s *Server) WSURL(account string) string {
	return "ws" + strings.TrimPrefix(s.BaseURL(account), "http") + "/responses"
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && wsconn.HeaderHasToken(r.Header, "Connection", "upgrade") &&
		wsconn.HeaderHasToken(r.Header, "Upgrade", "websocket")
}

// findHijacker finds the http.Hijacker under w, following Unwrap as
// http.ResponseController does.
func findHijacker(w http.ResponseWriter) (http.Hijacker, bool) {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return t, true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil, false
		}
	}
}

// upgradeWriter sees the upgrade happen: it records the upgrade before the
// 101 goes out and keeps the hijacked connection, which faults cut.
type upgradeWriter struct {
	http.ResponseWriter
	hj        http.Hijacker
	status    int
	conn      net.Conn
	onUpgrade func()
}

func (w *upgradeWriter) WriteHeader(code int) {
	w.status = code
	if code == http.StatusSwitchingProtocols {
		w.onUpgrade()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.hj.Hijack()
	w.conn = c
	return c, rw, err
}

// serveWebSocket upgrades an authenticated GET and serves the connection
// until it closes.
func (x *exchange) serveWebSocket() {
	u := x.u
	hj, ok := findHijacker(x.w)
	if !ok {
		x.writeError(&apiError{status: http.StatusNotImplemented, typ: typeInvalidRequest,
			msg: "WebSocket upgrades need an HTTP/1.1 connection."})
		return
	}
	x.header(nil, http.StatusSwitchingProtocols)
	if h := x.w.Header(); len(h["Content-Type"]) == 0 {
		delete(h, "Content-Type")
	}
	opened := false
	uw := &upgradeWriter{ResponseWriter: x.w, hj: hj, onUpgrade: func() {
		x.finish(statusUpgraded)
		u.wsCount(x.acct, 1)
		opened = true
	}}
	// Any Origin: the fake stands in for a service, not for a browser page.
	c, err := websocket.Accept(uw, x.r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		if opened {
			u.wsCount(x.acct, -1)
		} else {
			x.served.HTTPStatus = uw.status
			x.finish(statusError)
		}
		return
	}
	w := &wsConn{u: u, c: c, raw: uw.conn, acct: x.acct, name: x.served.Account, path: x.r.URL.Path,
		header: x.r.Header.Clone(), requestID: x.served.RequestID, opened: x.start}
	w.run()
	u.wsCount(x.acct, -1)
}

func (u *Upstream) wsCount(a *account, delta int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a.wsConns += delta
	u.notifyLocked()
}

// wsMaxAgeNow is the age limit in force; 0 means none.
func (u *Upstream) wsMaxAgeNow() time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch d := u.WSMaxAge; {
	case d == 0:
		return defaultWSMaxAge
	case d < 0:
		return 0
	default:
		return d
	}
}

// wsConn is one open WebSocket. Its handler goroutine reads messages; a
// second goroutine plays the turns, so that a response.create arriving
// while a turn runs can be refused.
type wsConn struct {
	u         *Upstream
	c         *websocket.Conn
	raw       net.Conn
	acct      *account
	name      string
	path      string
	header    http.Header
	requestID string
	opened    time.Time
	ctx       context.Context // ends when the connection does, or at Server.Close
	turns     chan wsTurn

	mu   sync.Mutex
	busy bool    // a turn is in flight
	last *stored // the connection-local cache: the last chainable response
}

// wsTurn is an accepted response.create.
type wsTurn struct {
	msg  []byte
	at   time.Time
	seq  int64
	step Step
}

// run serves the connection until it ends. Reads and writes are not given
// ctx: ending ctx closes the connection under them instead, from a goroutine
// that run joins, so that no goroutine outlives the handler.
func (w *wsConn) run() {
	ctx, cancel := context.WithCancel(w.u.ctx)
	w.ctx = ctx
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		<-ctx.Done()
		_ = w.raw.Close()
	}()
	w.c.SetReadLimit(maxBody)
	// Never full: busy admits one turn at a time, and the previous one has
	// been taken out by then.
	w.turns = make(chan wsTurn, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for t := range w.turns {
			w.runTurn(t)
		}
	}()
	w.read()
	cancel()
	<-watched
	close(w.turns)
	<-done
	_ = w.c.CloseNow()
}

// read handles client messages until the connection ends.
func (w *wsConn) read() {
	for {
		typ, msg, err := w.c.Read(context.Background())
		if err != nil {
			return
		}
		at := time.Now()
		seq := w.u.logMessage(w, msg)
		if typ != websocket.MessageText {
			w.exchange(nil, at, seq).finish(statusError)
			_ = w.c.Close(websocket.StatusPolicyViolation, "binary messages are not supported; send JSON text")
			return
		}
		if e := checkMessage(msg); e != nil {
			w.reject(e, at, seq)
			continue
		}
		if limit := w.u.wsMaxAgeNow(); limit > 0 && at.Sub(w.opened) >= limit {
			w.reject(&apiError{status: 400, typ: typeInvalidRequest, code: "websocket_connection_limit_reached",
				msg: "Responses websocket connection limit reached (" + ageText(limit) +
					"). Create a new websocket connection to continue."}, at, seq)
			_ = w.c.Close(websocket.StatusNormalClosure, "connection age limit reached")
			return
		}
		w.mu.Lock()
		busy := w.busy
		w.busy = true
		w.mu.Unlock()
		if busy {
			w.reject(&apiError{status: 400, typ: typeInvalidRequest, code: "response_in_progress",
				msg: "A response is already in progress on this connection; send the next response.create after its terminal event."}, at, seq)
			continue
		}
		_, s := w.u.begin(w.name, false)
		w.turns <- wsTurn{msg: msg, at: at, seq: seq, step: s}
	}
}

func ageText(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + " minutes"
	}
	return d.String()
}

// checkMessage accepts a JSON object of type response.create.
func checkMessage(msg []byte) *apiError {
	if jsonx.DepthExceeds(msg, jsonx.MaxDepth) || !gjson.ValidBytes(msg) || !gjson.ParseBytes(msg).IsObject() {
		return errInvalidJSON
	}
	switch typ := gjson.GetBytes(msg, "type"); {
	case typ.Type == gjson.String && typ.Str == "response.create":
		return nil
	case !typ.Exists():
		return &apiError{status: 400, typ: typeInvalidRequest, param: "type", code: "missing_required_parameter",
			msg: "Missing required parameter: 'type'."}
	case typ.Str == "response.append":
		return &apiError{status: 400, typ: typeInvalidRequest, code: "unsupported_event_type",
			msg: "response.append is no longer supported. Send response.create with previous_response_id and only the new input items."}
	default:
		return &apiError{status: 400, typ: typeInvalidRequest, code: "unsupported_event_type",
			msg: "Unsupported event type " + strconv.Quote(typ.String()) + "; send response.create."}
	}
}

// exchange starts the Served record of a message; a is nil for messages
// that are not turns (they are never in flight).
func (w *wsConn) exchange(a *account, at time.Time, seq int64) *exchange {
	x := &exchange{u: w.u, acct: a, start: at}
	x.served = Served{Account: w.name, WebSocket: true, RequestID: w.requestID, Seq: seq}
	return x
}

// reject answers a message that is not a turn with an error message.
func (w *wsConn) reject(e *apiError, at time.Time, seq int64) {
	x := w.exchange(nil, at, seq)
	x.served.HTTPStatus, x.served.Code = e.status, e.code
	x.finish(statusError)
	w.write(appendErrorMessage(nil, e, nil))
}

func (w *wsConn) write(msg []byte) {
	_ = w.c.Write(context.Background(), websocket.MessageText, msg)
}

// end settles a turn's effect on the connection, then records it: it must
// run before the turn's last message is written, so that a client that has
// read it can send the next turn and find it recorded. next is the turn's
// chainable response; a turn without one evicts prevID from the cache, as
// the real service does after a failed continuation.
func (w *wsConn) end(x *exchange, prevID string, next *stored, status string) {
	if x.done {
		return
	}
	w.mu.Lock()
	w.busy = false
	switch {
	case next != nil:
		w.last = next
	case w.last != nil && prevID != "" && w.last.id == prevID:
		w.last = nil
	}
	w.mu.Unlock()
	x.finish(status)
}

func (w *wsConn) cached() *stored {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// cut closes the connection without a close message; reset asks for a TCP
// reset.
func (w *wsConn) cut(reset bool) {
	if tc, ok := w.raw.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = w.raw.Close()
}

// logMessage logs a client message and returns its Seq.
func (u *Upstream) logMessage(w *wsConn, msg []byte) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.seq++
	if u.NoLog {
		return u.seq
	}
	u.requests = append(u.requests, Received{Account: w.name, Method: methodWS, Path: w.path,
		Header: w.header, Body: msg, Seq: u.seq})
	u.notifyLocked()
	return u.seq
}
