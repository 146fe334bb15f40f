package relay

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/h1"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/internal/wsconn"
)

// Defaults of zero WebSocketOptions fields (documented on each field).
const (
	defaultFirstMessageTimeout = 30 * time.Second
	defaultPingInterval        = 30 * time.Second
	defaultPingTimeout         = 10 * time.Second
	defaultUpstreamMaxAge      = 55 * time.Minute
	// defaultUpstreamIdleTimeout is how long an upstream socket is kept
	// between turns (UpstreamIdleTimeout 0).
	defaultUpstreamIdleTimeout = 10 * time.Minute
	// defaultMaxUpstreamSockets caps the upstream sockets of an account
	// without a concurrency limit (MaxUpstreamSockets 0).
	defaultMaxUpstreamSockets = 64
	// defaultMaxConnsPerKey caps the connections of a key whose Subject
	// has no concurrency limit (MaxConnsPerKey 0).
	defaultMaxConnsPerKey = 16
	// connsPerConcurrency is how many sockets per allowed concurrent turn
	// are open at most by default: client connections of a key
	// (MaxConnsPerKey 0) and upstream sockets of an account
	// (MaxUpstreamSockets 0). Idle connections keep a spare or two, not
	// hundreds.
	connsPerConcurrency = 2
	// betaHeader is the OpenAI-Beta value sent on upstream dials.
	betaHeader = "responses_websockets=2026-02-06"
)

// WebSocketOptions turns on the Responses WebSocket mode of a Handler
// (Handler.WebSocket) and tunes it. A zero WebSocketOptions serves it with
// the defaults below; a negative field turns its behaviour off where its
// comment says so (elsewhere it panics at first use, naming the field).
//
// Each response.create message is a turn through the same pipeline as a
// POST: user slot (Handler.UserWait), billing gate, account selection,
// failover before the first event, one usage record. Slots are held for
// the turn only, so an idle connection holds none. A connection is pinned
// to the account that served its last turn and, when that account has
// WebSocket set, to one upstream socket on it; other accounts are reached
// through an HTTP bridge (a streaming POST whose events become frames). A
// message is a body: it is capped by Handler.MaxBodyBytes (1009 when
// larger), and upstream frames by Handler.MaxEventBytes.
//
// Close codes: 1000 normal; 1001 shutting down; 1008 policy (first message
// late or not response.create, binary frame); 1009 message too big; 1011
// internal error; 1013 try again later (no slot, no account, upstream
// overloaded: the error frame before the close says which). Reasons are
// cut to 120 bytes.
//
// An upstream that fails before a turn's first event reached the client
// is failed over, unless the turn continues state only that upstream
// socket holds (previous_response_id with store=false); then the turn ends
// with the error frame. An upstream that breaks mid-turn ends the turn
// with one response.failed frame; the connection stays open and the next
// turn dials again. An upstream socket closed while idle is replaced on
// the same account, without counting against it. A handshake is never
// redirected (a 3xx is a failed dial), so the account's token reaches only
// its BaseURL; handshakes use Handler.Transport when it is an
// *http.Transport.
type WebSocketOptions struct {
	// FirstMessageTimeout is how long a new connection may stay silent
	// before its first response.create; then it closes with 1008. 0: 30 s.
	FirstMessageTimeout time.Duration
	// PingInterval and PingTimeout keep both sockets alive. 0: 30 s, 10 s.
	PingInterval, PingTimeout time.Duration
	// UpstreamMaxAge is how old an upstream socket may get before the next
	// turn dials a fresh one (the upstream closes at 60 minutes). 0: 55 min.
	UpstreamMaxAge time.Duration
	// UpstreamIdleTimeout closes an upstream socket no turn used for this
	// long; the connection's next turn dials a new one (a store=false
	// continuation of the old socket's response then fails). 0: 10 min;
	// negative: kept until UpstreamMaxAge.
	UpstreamIdleTimeout time.Duration
	// MaxUpstreamSockets caps the open upstream sockets of one account
	// across all connections. A turn that would dial one more goes through
	// the account's HTTP bridge instead; it is not a failure of the
	// account. 0: twice the account's Concurrency, or 64 when that is
	// unlimited; negative: unlimited.
	MaxUpstreamSockets int
	// MaxConnsPerKey caps open connections per API key; one more is
	// answered 429 before the upgrade. 0: twice the Subject's Concurrency,
	// or 16 when that is unlimited; negative: unlimited.
	MaxConnsPerKey int
	// ConnLimiter counts open connections (key "wsconn:"+APIKeyID), for
	// MaxConnsPerKey across relays. nil: an in-memory limiter.
	ConnLimiter concurrency.SlotLimiter
	// Accept configures the client handshake (origin patterns,
	// compression). nil: coder/websocket's defaults.
	Accept *websocket.AcceptOptions
}

// wsServer is a Handler's WebSocket mode: its options and the state of its
// connections and upstream sockets.
type wsServer struct {
	relay *Handler
	opts  *WebSocketOptions // Handler.WebSocket; nil: the mode is off

	connsOnce      sync.Once
	noHijackLogged atomic.Bool
	memConns       *concurrency.Memory

	sockMu  sync.Mutex
	sockets map[string]int // open upstream sockets per account

	open     inflight // the open connections
	mu       sync.Mutex
	conns    map[*conn]struct{}
	stopping chan struct{} // closed by Shutdown
}

// serve serves one WebSocket upgrade on the Responses path.
func (h *wsServer) serve(w http.ResponseWriter, r *http.Request) {
	if !canHijack(w) {
		// Checked before any 101: a middleware wraps the ResponseWriter
		// without Hijack or Unwrap, so the socket cannot be taken over.
		h.warnNoHijack()
		WriteError(w, &APIError{Status: http.StatusNotImplemented, Type: "server_error",
			Message: "WebSocket mode is not available on this server"})
		return
	}
	subj, err := h.relay.subject(r)
	if err != nil {
		WriteError(w, authAnswer(err))
		return
	}
	release := func() {}
	if max := h.maxConns(subj); max > 0 {
		rel, ok, err := h.connLimiter().TryAcquire(r.Context(), "wsconn:"+subj.APIKeyID, max)
		if err != nil || !ok {
			WriteError(w, &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
				Message: "Too many open WebSocket connections for this API key", RetryAfter: 5 * time.Second})
			return
		}
		release = rel
	}
	defer release()
	if !h.enter() {
		WriteError(w, &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Server is shutting down, please reconnect", RetryAfter: time.Second})
		return
	}
	defer h.leave() // deferred: a panic in a turn must not keep Shutdown waiting
	bw := &batchWriter{ResponseWriter: w}
	ws, err := websocket.Accept(bw, r, h.opts.Accept)
	if err != nil {
		return // Accept has answered the client
	}
	c := newConn(h, ws, r, subj)
	c.out = bw.conn
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	}()
	c.run()
}

func (h *wsServer) initLocked() {
	if h.conns == nil {
		h.conns = make(map[*conn]struct{})
		h.stopping = make(chan struct{})
	}
}

// enter counts a new connection; false once Shutdown began.
func (h *wsServer) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked()
	select {
	case <-h.stopping:
		return false
	default:
	}
	h.open.add()
	return true
}

func (h *wsServer) leave() { h.open.done() }

// stop is closed when Shutdown begins.
func (h *wsServer) stop() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked()
	return h.stopping
}

// shutdown stops accepting connections, closes each open one with 1001 at
// its next turn boundary and waits for them to end; when ctx ends first it
// cuts the rest and returns ctx.Err().
func (h *wsServer) shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.initLocked()
	select {
	case <-h.stopping:
	default:
		close(h.stopping)
	}
	h.mu.Unlock()
	err := h.open.wait(ctx)
	if err != nil {
		h.mu.Lock()
		for c := range h.conns {
			c.ws.CloseNow()
			c.cancel()
		}
		h.mu.Unlock()
	}
	return err
}

// active reports how many WebSocket connections are open.
func (h *wsServer) active() int { return h.open.count() }

// maxConns is the connection cap of subj's key; 0: none.
func (h *wsServer) maxConns(subj *Subject) int {
	return socketCap(h.opts.MaxConnsPerKey, subj.Concurrency, defaultMaxConnsPerKey)
}

// socketCap resolves a cap on sockets: set (> 0), none (< 0), or by default
// connsPerConcurrency per allowed concurrent turn, def when concurrency is
// unlimited. 0 is no cap.
func socketCap(set, concurrency, def int) int {
	switch {
	case set < 0:
		return 0
	case set > 0:
		return set
	case concurrency > 0:
		return connsPerConcurrency * concurrency
	}
	return def
}

// dialClient is the client that sends upstream handshakes: one on the
// relay's own transport when that is an *http.Transport (the same TLS
// roots, proxy and dialer as its HTTP requests; it sends an upgrade over
// HTTP/1.1), else the default.
func (h *wsServer) dialClient() *http.Client {
	tr := h.relay.transport
	if t, ok := tr.(*h1.Transport); ok {
		tr = t.Fallback
	}
	if t, ok := tr.(*http.Transport); ok {
		return &http.Client{Transport: t}
	}
	return nil
}

func (h *wsServer) connLimiter() concurrency.SlotLimiter {
	if h.opts.ConnLimiter != nil {
		return h.opts.ConnLimiter
	}
	h.connsOnce.Do(func() { h.memConns = concurrency.NewMemory() })
	return h.memConns
}

// canHijack reports whether w, or a ResponseWriter it unwraps to (as
// http.ResponseController follows them), can be hijacked.
func canHijack(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// warnNoHijack logs, once per Handler, why upgrades are answered 501.
func (h *wsServer) warnNoHijack() {
	if h.noHijackLogged.CompareAndSwap(false, true) {
		h.relay.log.Warn("relay: the ResponseWriter cannot be hijacked (a middleware wraps it without Hijack or Unwrap); " +
			"WebSocket upgrades are answered 501. Give the wrapper an Unwrap method returning the wrapped ResponseWriter.")
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && wsconn.HeaderHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// The knobs resolve by internal/knob's rule (see the WebSocketOptions doc).

func (h *wsServer) firstMessageTimeout() time.Duration {
	return knob.Positive("relay.WebSocketOptions.FirstMessageTimeout", h.opts.FirstMessageTimeout, defaultFirstMessageTimeout)
}

func (h *wsServer) pingInterval() time.Duration {
	return knob.Positive("relay.WebSocketOptions.PingInterval", h.opts.PingInterval, defaultPingInterval)
}

func (h *wsServer) pingTimeout() time.Duration {
	return knob.Positive("relay.WebSocketOptions.PingTimeout", h.opts.PingTimeout, defaultPingTimeout)
}

func (h *wsServer) upstreamMaxAge() time.Duration {
	return knob.Positive("relay.WebSocketOptions.UpstreamMaxAge", h.opts.UpstreamMaxAge, defaultUpstreamMaxAge)
}
