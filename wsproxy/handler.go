// Package wsproxy serves the Responses WebSocket mode (GET /v1/responses
// upgraded) through the same turn pipeline as the HTTP relay.
//
// Each response.create message is a turn: validated like a POST body, then
// user slot, billing gate, account selection and one usage record, through
// relay.Handler.ServeTurn. Slots are held for the turn only, so an idle
// connection holds none. A connection is pinned to the account that served
// its last turn and, when that account has WebSocket set, to one upstream
// WebSocket on it; accounts without it get an HTTP bridge (each turn a
// streaming POST whose SSE events become frames).
//
// # Mounting
//
// A Handler serves both transports on one path: upgrades go to the
// WebSocket mode, everything else to the relay.Handler.
//
//	rh := &relay.Handler{Scheduler: sched, Credentials: creds, Authenticate: auth}
//	mux.Handle("/v1/responses", &wsproxy.Handler{Relay: rh})
//
// # Close codes
//
// 1000 normal; 1008 policy (first message late or not response.create,
// binary frame); 1009 message over ReadLimit (never more than the relay's
// MaxBodyBytes); 1011 internal error; 1013
// try again later (no slot, no account, upstream overloaded or rate
// limited: the error frame that precedes the close says which). Reasons
// are cut to 120 bytes.
//
// # Upstream failures
//
// An upstream that fails before a turn's first event reached the client is
// failed over to another account, unless the turn depends on that upstream
// connection's state (previous_response_id with store=false); then the turn
// ends with the error frame. An upstream that breaks mid-turn ends the turn
// with one response.failed frame; the client connection stays open and the
// next turn dials a new upstream. An upstream socket that ended while idle
// (the upstream closed it between turns) is replaced on the same account
// before the next turn is sent, or when that turn finds it cut or closed
// as idle (1000, 1001) before its first event; this is not counted
// against the account. The relay.Handler's limits apply to each turn as
// over HTTP: StreamIdleTimeout (also for an upstream that never sends a
// first event), DrainTimeout, HookTimeout; frames from the upstream are
// capped by ReadLimit.
//
// # Upstream sockets
//
// A socket no turn used for UpstreamIdleTimeout is closed; the next turn
// dials again. The open sockets of one account are capped by
// MaxUpstreamSockets across all connections: a turn that would dial one
// more is sent through the account's HTTP bridge. A handshake is never
// redirected: a 3xx answer is a failed dial (failed over like any other),
// so the account's token reaches only the account's BaseURL. Handshakes
// use the relay's Transport (TLS roots, proxy, dialer) unless HTTPClient
// is set.
package wsproxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/internal/wsconn"
	"github.com/relaykit/responsesrelay/relay"
)

// Defaults of zero Handler fields (documented on each field).
const (
	defaultReadLimit           = 32 << 20
	defaultFirstMessageTimeout = 30 * time.Second
	defaultPingInterval        = 30 * time.Second
	defaultPingTimeout         = 10 * time.Second
	defaultUpstreamMaxAge      = 55 * time.Minute
	defaultTurnWaitTimeout     = 5 * time.Second
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

// Handler serves the Responses WebSocket mode and hands every request that
// is not a WebSocket upgrade to Relay. Only Relay is required: a zero field
// takes the default its comment gives, and a negative one turns the
// behaviour off where the comment says so (elsewhere it panics at first
// use, naming the field).
type Handler struct {
	// Relay is the HTTP relay whose pipeline (authentication, limiter,
	// billing, scheduler, credentials, usage, logger) the turns share.
	Relay *relay.Handler
	// ReadLimit caps one client message; larger closes with 1009. It is
	// never larger than the relay's MaxBodyBytes (a message is a body).
	// 0: 32 MiB. Upstream frames are capped by ReadLimit alone.
	ReadLimit int64
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
	// the account's HTTP bridge instead (relay.ErrUseHTTP); it is not a
	// failure of the account. 0: twice the account's Concurrency, or 64
	// when that is unlimited; negative: unlimited.
	MaxUpstreamSockets int
	// TurnWait bounds a turn's wait for a user slot. Zero Timeout: 5 s;
	// zero MaxWaiters: the relay's default.
	TurnWait concurrency.WaitOptions
	// MaxConnsPerKey caps open connections per API key; one more is
	// answered 429 before the upgrade. 0: twice the Subject's Concurrency,
	// or 16 when that is unlimited; negative: unlimited.
	MaxConnsPerKey int
	// ConnLimiter counts open connections (key "wsconn:"+APIKeyID). nil:
	// an in-memory limiter owned by the Handler.
	ConnLimiter concurrency.SlotLimiter
	// Accept configures the client handshake (origin patterns,
	// compression). nil: coder/websocket's defaults.
	Accept *websocket.AcceptOptions
	// HTTPClient sends the handshakes of upstream sockets (an HTTP/1.1
	// upgrade; its Timeout bounds the handshake only). Redirects are never
	// followed: a 3xx answer is a failed dial. nil: a client on the
	// relay's Transport when that is an *http.Transport (its TLS config,
	// Proxy and DialContext apply), else http.DefaultClient.
	HTTPClient *http.Client

	connsOnce      sync.Once
	noHijackLogged atomic.Bool
	memConns       *concurrency.Memory

	sockMu  sync.Mutex
	sockets map[string]int // open upstream sockets per account

	mu       sync.Mutex
	conns    map[*conn]struct{}
	open     int
	idle     chan struct{} // closed when the last connection ends; nil while none
	stopping chan struct{} // closed by Shutdown
}

// ServeHTTP serves a WebSocket upgrade on the Responses path, and passes
// every other request to Relay (which answers a plain GET with 426).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		if r.Method == http.MethodGet {
			// A plain GET on a WebSocket endpoint: say what it expects.
			w.Header().Set("Upgrade", "websocket")
			relay.WriteError(w, &relay.APIError{Status: http.StatusUpgradeRequired, Type: "invalid_request_error",
				Message: "This endpoint serves the Responses WebSocket mode: send a WebSocket upgrade, or POST /v1/responses"})
			return
		}
		h.Relay.ServeHTTP(w, r)
		return
	}
	if !canHijack(w) {
		// Checked before any 101: a middleware wraps the ResponseWriter
		// without Hijack or Unwrap, so the socket cannot be taken over.
		h.warnNoHijack()
		relay.WriteError(w, &relay.APIError{Status: http.StatusNotImplemented, Type: "server_error",
			Message: "WebSocket mode is not available on this server"})
		return
	}
	subj, err := h.Relay.Subject(r)
	if err != nil {
		ae, _ := errors.AsType[*relay.APIError](err) // Subject's errors always hold one
		relay.WriteError(w, ae)
		return
	}
	release := func() {}
	if max := h.maxConns(subj); max > 0 {
		rel, ok, err := h.connLimiter().TryAcquire(r.Context(), "wsconn:"+subj.APIKeyID, max)
		if err != nil || !ok {
			relay.WriteError(w, &relay.APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
				Message: "Too many open WebSocket connections for this API key", RetryAfter: 5 * time.Second})
			return
		}
		release = rel
	}
	defer release()
	if !h.enter() {
		relay.WriteError(w, &relay.APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Server is shutting down, please reconnect", RetryAfter: time.Second})
		return
	}
	defer h.leave() // deferred: a panic in a turn must not keep Shutdown waiting
	bw := &batchWriter{ResponseWriter: w}
	ws, err := websocket.Accept(bw, r, h.Accept)
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

func (h *Handler) initLocked() {
	if h.conns == nil {
		h.conns = make(map[*conn]struct{})
		h.stopping = make(chan struct{})
	}
}

// enter counts a new connection; false once Shutdown began.
func (h *Handler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked()
	select {
	case <-h.stopping:
		return false
	default:
	}
	if h.idle == nil {
		h.idle = make(chan struct{})
	}
	h.open++
	return true
}

func (h *Handler) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open--
	if h.open == 0 {
		close(h.idle)
		h.idle = nil
	}
}

// stop is closed when Shutdown begins.
func (h *Handler) stop() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked()
	return h.stopping
}

// Shutdown stops accepting connections, lets every turn in flight finish,
// closes each connection with 1001 (going away) at its next turn boundary,
// and waits for them to end. When ctx ends first the remaining connections
// are cut and ctx.Err() is returned at once; their turns still drain the
// upstream for usage (DrainTimeout), so call Wait, then relay.Handler.Wait,
// before closing the usage sink. http.Server.Shutdown does not wait for
// upgraded connections: call this beside it.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.initLocked()
	select {
	case <-h.stopping:
	default:
		close(h.stopping)
	}
	h.mu.Unlock()
	err := h.wait(ctx)
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

// wait blocks until no connection is open or ctx ends.
func (h *Handler) wait(ctx context.Context) error {
	h.mu.Lock()
	idle := h.idle
	h.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Active reports how many WebSocket connections are open.
func (h *Handler) Active() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}

// maxConns is the connection cap of subj's key; 0: none.
func (h *Handler) maxConns(subj *relay.Subject) int {
	return socketCap(h.MaxConnsPerKey, subj.Concurrency, defaultMaxConnsPerKey)
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

// readLimit is the cap of one client message: ReadLimit, and never more
// than the relay takes as a body.
func (h *Handler) readLimit() int64 {
	return min(h.readLimitKnob(), knob.Or(h.Relay.MaxBodyBytes, 32<<20)) // the relay's default body limit
}

// dialClient is the client that sends upstream handshakes.
func (h *Handler) dialClient() *http.Client {
	if h.HTTPClient != nil {
		return h.HTTPClient
	}
	if t, ok := h.Relay.Transport.(*http.Transport); ok {
		// The relay's own transport: the same TLS roots, proxy and
		// dialer as its HTTP requests. It sends an upgrade over HTTP/1.1.
		return &http.Client{Transport: t}
	}
	return nil
}

func (h *Handler) connLimiter() concurrency.SlotLimiter {
	if h.ConnLimiter != nil {
		return h.ConnLimiter
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
func (h *Handler) warnNoHijack() {
	if h.noHijackLogged.CompareAndSwap(false, true) {
		log := h.Relay.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("wsproxy: the ResponseWriter cannot be hijacked (a middleware wraps it without Hijack or Unwrap); " +
			"WebSocket upgrades are answered 501. Give the wrapper an Unwrap method returning the wrapped ResponseWriter.")
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && wsconn.HeaderHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// The knobs resolve by internal/knob's rule (see the Handler doc).

func (h *Handler) readLimitKnob() int64 {
	return knob.Positive("wsproxy.Handler.ReadLimit", h.ReadLimit, defaultReadLimit)
}

func (h *Handler) firstMessageTimeout() time.Duration {
	return knob.Positive("wsproxy.Handler.FirstMessageTimeout", h.FirstMessageTimeout, defaultFirstMessageTimeout)
}

func (h *Handler) pingInterval() time.Duration {
	return knob.Positive("wsproxy.Handler.PingInterval", h.PingInterval, defaultPingInterval)
}

func (h *Handler) pingTimeout() time.Duration {
	return knob.Positive("wsproxy.Handler.PingTimeout", h.PingTimeout, defaultPingTimeout)
}

func (h *Handler) upstreamMaxAge() time.Duration {
	return knob.Positive("wsproxy.Handler.UpstreamMaxAge", h.UpstreamMaxAge, defaultUpstreamMaxAge)
}
