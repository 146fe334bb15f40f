// Package relay serves the OpenAI Responses API from a pool of upstream
// accounts. For POST /v1/responses it validates a turn, admits it (user
// slot, billing gate), picks an upstream account, relays the JSON or SSE
// answer with failover before the first output event, and records one
// usage record per turn that reached an upstream. The same Handler serves
// the WebSocket mode, the calls on a stored response (retrieve, delete,
// input items, cancel, each on the account that holds it and for its
// creator only), input token counts, compaction and the model list
// (routes.go lists them), and keeps the records that let a conversation
// move between accounts (Conversations).
//
// # WebSocket mode
//
// With Handler.WebSocket set, a GET upgrade of the same path opens the
// Responses WebSocket mode: each response.create message is a turn
// through the same pipeline, its events sent as frames (see
// WebSocketOptions). Mount the Handler on the path for every method:
//
//	h.WebSocket = &relay.WebSocketOptions{}
//	mux.Handle("/v1/responses", h)
//
// # Errors
//
// Every error has OpenAI's shape with all four keys:
// {"error":{"message":...,"type":...,"param":...,"code":...}}. Once a
// stream is committed (an event or a ": ping" was written) an error is an
// SSE event instead: an "error" event before any response event, and a
// response.failed that continues the sequence numbers after output began.
//
// # Failover
//
// Connection errors, 401, 402, 403, 408, 429, 529, 5xx and in-band
// refusals (a stream that fails before any output) move the turn to another
// account, at most MaxAccountSwitches times. Once an event reached the
// client the turn never moves. Other 4xx go back as the upstream said,
// sanitized. MapError may rewrite what the client sees.
//
// A stream that breaks is an upstream failure by the same rules: a reset,
// an idle upstream (StreamIdleTimeout), an event over MaxEventBytes, or an
// event that is not a JSON object with a type (never forwarded). So are a
// non-streaming answer over MaxEventBytes and a stream that repeats its
// opening events (response.created, response.in_progress) past a fixed
// bound before any output.
//
// # Client disconnect
//
// When the client goes away the relay stops writing, keeps reading the
// upstream for up to DrainTimeout to learn the usage the upstream reports,
// and records the turn with status client_gone and that usage. A client
// gone before any upstream answered (while waiting for a slot, or before
// response headers) is not recorded: no upstream did billable work that
// the relay could see. A client that stops reading counts as gone once a
// write to it has blocked for ClientWriteTimeout.
//
// # Host hooks
//
// Authenticate, the billing Gate, the scheduler's Pool, Store and
// OnAccountEvent, Credentials and the usage sink are the host's code. A
// panic in one is recovered and answered like an error from it; a call
// that outlives HookTimeout (or, before the upstream answer, the client's
// context) is abandoned, so a hung database cannot hold a turn or its
// slots (the scheduler bounds OnAccountEvent itself, by
// Scheduler.EventTimeout). RELIABILITY.md at the repository root lists
// every fault and its answer.
//
// # Observing
//
// Handler.Observer receives each turn's start, slot waits, upstream
// attempts and end (its usage, time to first token included) as plain
// structs, on the turn's goroutine (see Observer); examples/relaymetrics and examples/relaytrace turn them
// into Prometheus series and OpenTelemetry spans.
//
// # Usage
//
// Exactly one billing.Usage per turn that got an answer from an upstream,
// written after the turn ended (and after the client got its last byte).
// Failed failover attempts are not records; they count in Attempts.
// response.incomplete and response.failed carry their usage into the
// record. Use billing.NewAsync (or a durable spool) in front of a slow
// sink, and call Handler.Shutdown before closing it.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/internal/sse"
	"github.com/relaykit/responsesrelay/scheduler"
	"golang.org/x/sync/singleflight"
)

// Defaults of zero Handler fields (documented on each field).
const (
	defaultMaxBodyBytes       = 32 << 20
	defaultMaxAccountSwitches = 3
	defaultUserWaitTimeout    = 30 * time.Second
	defaultUserWaitExtra      = 20 // waiters beyond the user's limit
	defaultKeepAlive          = 10 * time.Second
	defaultStreamIdleTimeout  = 300 * time.Second
	defaultDrainTimeout       = 30 * time.Second
	defaultJSONHeaderTimeout  = 15 * time.Minute
	defaultHookTimeout        = 10 * time.Second
	defaultClientWriteTimeout = 60 * time.Second
	defaultMaxEventBytes      = sse.DefaultMaxEventBytes
)

// Handler relays the Responses API. Only Scheduler is required: a zero
// field takes the default its comment gives, and a negative one turns the
// behaviour off where the comment says so (elsewhere it panics at first
// use, naming the field). A Handler must not be copied after first use,
// and its fields must not change while it serves.
type Handler struct {
	// Scheduler picks upstream accounts. Required.
	Scheduler *scheduler.Scheduler
	// Limiter holds user slots (key "user:"+UserID). nil: an in-memory
	// concurrency.Memory owned by the Handler. When it is also
	// Scheduler.Limiter and a scheduler.Batcher (a shared store), a turn
	// takes its user and account slots in one step and gives them back in
	// one (Scheduler.TrySelect).
	Limiter concurrency.SlotLimiter
	// Billing is asked after the user slot is taken. nil: allow all.
	Billing billing.Gate
	// Prices gives each usage record its CostMicros (the requested model's
	// price; reasoning tokens are output tokens) and each hold its
	// estimate. A model without a price is refused with 400
	// model_not_priced when Prices.RefuseUnpriced is set, else costs zero
	// (logged once per model). nil: every record costs zero.
	Prices *billing.Prices
	// Ledger holds each turn's estimated cost and rate-limit share after
	// Billing admitted it, before any upstream call, and is told when a
	// turn that reached no upstream ends (Release). Turns that did are
	// settled by their usage record: wrap Usage's sink in
	// billing.Settling. HTTP answers carry what the key has left
	// (x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens,
	// X-Relay-Budget-Remaining-Micros). nil: no holds, no quotas.
	Ledger billing.Ledger
	// DefaultOutputCap is the output, in tokens, a turn without
	// max_output_tokens is held for. 0: 8192; negative: none (the hold is
	// the input alone).
	DefaultOutputCap int
	// Usage receives one record per turn that reached an upstream, after the
	// turn ended. Wrap a slow sink in billing.NewAsync. nil: discard.
	Usage billing.UsageSink
	// Conversations keeps a record of each served turn (its input and
	// output items, scoped to the API key), so that a conversation can
	// move to another account: a previous_response_id chain whose account
	// cannot serve is rebuilt from the records and sent whole. Records hold
	// user content. nil: a conversation.Memory with its defaults (256 MiB,
	// 24 h); a Memory with a negative MaxBytes keeps nothing.
	Conversations conversation.Store
	// Credentials gives the upstream bearer token of an account. nil: no
	// Authorization header is sent (an upstream behind its own auth proxy).
	// One that is also a scheduler.Refresher renews a token an upstream
	// answers 401 to, and the request is sent again once on the same
	// account (see Refresher).
	Credentials scheduler.Credentials
	// Authenticate identifies the caller. nil: SubjectFrom(r.Context()), for
	// hosts that authenticate in middleware. An error that holds an
	// *APIError (errors.As) is answered with it, so a key store outage can
	// answer 503 and a revoked key 403; any other error or a nil subject is
	// 401; no answer within HookTimeout is 503.
	Authenticate func(*http.Request) (*Subject, error)
	// Transport sends upstream requests. nil: NewTransport's settings,
	// with requests to http:// upstreams (no proxy) sent by the relay's
	// own HTTP/1.1 client, which keeps no goroutine per connection and
	// holds 13 KiB less per open stream (ARCHITECTURE.md, "The relay's
	// own HTTP/1.1 client"); https and proxied requests go through
	// NewTransport's.
	Transport http.RoundTripper
	// MapError decides what a client is told about an upstream failure.
	// nil, or a nil result: MapUpstreamError. Keys are masked in its
	// answer as in the upstream's body; a panic falls back to the built-in
	// answer.
	MapError func(*UpstreamError) *APIError
	// Logger receives operational logs. nil: slog.Default().
	Logger *slog.Logger
	// WebSocket turns on the Responses WebSocket mode: a GET upgrade of the
	// same path is served as a connection whose response.create messages
	// are turns (see WebSocketOptions). nil: the mode is off, and an
	// upgrade is answered 426, which tells a client to use HTTP.
	WebSocket *WebSocketOptions
	// Observer receives every turn's start, slot waits, upstream attempts
	// and end, for metrics and traces. nil: nothing is observed, at the
	// cost of a nil check.
	Observer *Observer

	// MaxBodyBytes caps a request body; larger is 413. 0: 32 MiB.
	MaxBodyBytes int64
	// BodyMemory bounds the request body bytes held, across all users,
	// from before the first byte is read until the user slot is taken:
	// bodies are read, decoded and parsed before the wait for the slot, so
	// queued requests would otherwise hold any number of them. A body
	// reserves its Content-Length (MaxBodyBytes when unknown), plus
	// MaxBodyBytes for the decoded copy when it is encoded, then keeps only
	// its final size. A request that cannot reserve within UserWait.Timeout
	// is answered 503. 0: 256 MiB; negative: no bound.
	BodyMemory int64
	// BodyMemoryPerUser is the same bound per user; a request that cannot
	// reserve in time is answered 429. For a user without a concurrency
	// limit it also covers the turns being served. 0: 4 × MaxBodyBytes;
	// negative: no bound.
	BodyMemoryPerUser int64
	// MaxAccountSwitches is how many times a turn may move to another
	// account after an upstream failure. 0: 3; negative: never.
	MaxAccountSwitches int
	// UserWait bounds the wait for a user slot. Zero MaxWaiters: the user's
	// limit + 20; zero Timeout: 30 s.
	UserWait concurrency.WaitOptions
	// KeepAlive is the interval of ": ping" comments on a waiting or silent
	// stream. 0: 10 s; negative: never.
	KeepAlive time.Duration
	// StreamIdleTimeout aborts a stream whose upstream sent nothing for this
	// long (the account is penalized). It also bounds the wait for response
	// headers of a streaming request. 0: 300 s; it cannot be turned off.
	StreamIdleTimeout time.Duration
	// JSONHeaderTimeout bounds the wait for a non-streaming answer. 0: 15
	// min; it cannot be turned off.
	JSONHeaderTimeout time.Duration
	// DrainTimeout is how long the upstream is still read after the client
	// left, to learn the usage. 0: 30 s; negative: not at all.
	DrainTimeout time.Duration
	// HookTimeout bounds each call to host code on a turn's path:
	// Authenticate, Billing.Check, Credentials.Token and a Refresher's
	// Refresh, Usage.Record, the scheduler's sticky Bind, and (added to
	// the scheduler's own account wait) Select with its Pool and Store.
	// The client's context bounds those before the upstream answer too
	// (a Refresh shared by several turns is not ended by one client's
	// leaving; that client stops waiting for it). A hook that ignores its
	// context is abandoned: the turn goes on (or fails) without it, and a
	// slot it takes late is given back. 0: 10 s; it cannot be turned off.
	// (The scheduler bounds its OnAccountEvent itself:
	// Scheduler.EventTimeout.)
	HookTimeout time.Duration
	// ClientWriteTimeout bounds one write to the client (an event, a ping,
	// a JSON answer): a client that reads nothing for this long is treated
	// as gone, so it cannot hold slots through a stalled connection. The
	// relay sets the connection's write deadline itself for its answers,
	// in place of http.Server.WriteTimeout. 0: 60 s; negative: no deadline.
	ClientWriteTimeout time.Duration
	// MaxEventBytes caps one upstream SSE event, and a whole non-streaming
	// answer (held in memory the same way). A larger event is an upstream
	// failure: failed over before any output reached the client, a
	// response.failed after; a larger answer is failed over. 0: 32 MiB.
	MaxEventBytes int
	// ForwardHeaders adds client request headers to the built-in allowlist.
	// Hop-by-hop headers, those the client names in Connection, its
	// credentials (Authorization, Api-Key, X-Api-Key, Cookie) and
	// forwarding headers (X-Forwarded-*, Forwarded, X-Real-Ip) never pass.
	ForwardHeaders []string
	// ReturnHeaders adds upstream response headers (e.g. x-ratelimit-*) to
	// the built-in allowlist. Set-Cookie and credential headers never pass.
	ReturnHeaders []string
	// BackgroundPoll is how often the relay asks the upstream about the
	// background responses (background: true) it has not yet seen end, so
	// that each gets its one usage record even when its client never
	// polls; one still running after 6 hours is recorded as it stands.
	// 0: 5 s; negative: never (a background response is then recorded
	// only when a client's retrieve shows it ended).
	BackgroundPoll time.Duration
	// Models, when set, decides what GET …/models answers a subject: it
	// gets the model names the subject's group can reach (accounts'
	// Models and ModelMap keys; names with a wildcard left out) and
	// returns the list to answer, to filter it or add names. GET
	// …/models/{model} answers a name of that list, else 404. nil: the
	// names as found.
	Models func(ctx context.Context, subj *Subject, names []string) []string
	// DecodeBody decodes a request body by Content-Encoding. gzip and
	// identity are built in; other encodings (zstd) are 415 unless listed.
	DecodeBody map[string]func([]byte) ([]byte, error)

	initOnce    sync.Once
	active      inflight
	ws          wsServer
	bg          background
	convStore   conversation.Store
	blobs       blobIndex
	localBytes  atomic.Int64 // held by WebSocket connections' last responses (websocket_local.go)
	maxLocal    int64        // the bound on localBytes; 0: maxLocalBytes (tests set it)
	memory      *concurrency.Memory
	transport   http.RoundTripper
	log         *slog.Logger
	usageSink   billing.UsageSink
	userLimiter concurrency.SlotLimiter
	// userInProcess and schedInProcess: the user slots, and the stores
	// the Scheduler calls, are the library's in-memory ones, called on
	// the turn's goroutine (inline.go).
	userInProcess, schedInProcess bool
	// batchSlots: the user slots are in the Scheduler's Limiter, which
	// takes them with an account's in one step (batch.go).
	batchSlots bool
	// usageQueue: the usage sink is a *billing.Async, whose queue takes a
	// record without a hook call while it has room (handUsage).
	usageQueue bool
	bodies     *bodyBudget
	bearers    sync.Map // token -> []string{"Bearer " + token}
	nbearers   atomic.Int64
	// renewals shares a Refresher's call among the 401s of one account
	// and token; renewWaiting counts the callers waiting for one
	// (credentials_refresh.go).
	renewals     singleflight.Group
	renewWaiting atomic.Int64
	// noFlushLogged: the "cannot flush" warning was logged.
	noFlushLogged atomic.Bool
	unpriced      unpricedModels // models logged as unpriced
	// badPatchLogged: IDs of accounts whose invalid BodyPatch was logged.
	badPatchLogged sync.Map
}

// maxBearers bounds the cache of Authorization values; tokens that
// rotate often simply stop being cached.
const maxBearers = 4096

// bearer is the Authorization header value for token, built once: the
// transport only reads it.
func (h *Handler) bearer(token string) []string {
	if v, ok := h.bearers.Load(token); ok {
		return v.([]string)
	}
	v := []string{"Bearer " + token}
	if h.nbearers.Load() < maxBearers {
		if _, loaded := h.bearers.LoadOrStore(token, v); !loaded {
			h.nbearers.Add(1)
		}
	}
	return v
}

func (h *Handler) init() {
	h.initOnce.Do(func() {
		// A misconfigured knob panics here, on the first turn, rather
		// than deep inside one later.
		h.maxBody()
		h.maxEventBytes()
		h.idleTimeout()
		h.jsonHeaderTimeout()
		h.hookTimeout()
		h.log = h.Logger
		if h.log == nil {
			h.log = slog.Default()
		}
		h.transport = h.Transport
		if h.transport == nil {
			h.transport = defaultTransport()
		}
		h.convStore = h.Conversations
		if h.convStore == nil {
			h.convStore = &conversation.Memory{}
		}
		h.ws.relay, h.ws.opts = h, h.WebSocket
		if h.WebSocket != nil {
			h.ws.firstMessageTimeout()
			h.ws.pingInterval()
			h.ws.pingTimeout()
			h.ws.upstreamMaxAge()
		}
		h.usageSink = h.Usage
		if h.usageSink == nil {
			h.usageSink = billing.SinkFunc(func(context.Context, billing.Usage) error { return nil })
		}
		h.bodies = newBodyBudget(max(knob.Or(h.BodyMemory, defaultBodyMemory), 0),
			max(knob.Or(h.BodyMemoryPerUser, defaultBodyMemoryPerUser*h.maxBody()), 0))
		h.userLimiter = h.Limiter
		if h.userLimiter == nil {
			h.memory = concurrency.NewMemory()
			h.userLimiter = h.memory
		}
		h.userInProcess = inProcessLimiter(h.userLimiter)
		h.schedInProcess = inProcessScheduler(h.Scheduler)
		h.batchSlots = batchesUserSlots(h.Scheduler, h.userLimiter)
		_, h.usageQueue = h.usageSink.(*billing.Async)
	})
}

func userKey(userID string) string { return "user:" + userID }

// now is the relay's clock: the Scheduler's, so that the times the relay
// measures and the times the scheduler judges accounts by agree.
func (h *Handler) now() time.Time {
	if h.Scheduler.Now != nil {
		return h.Scheduler.Now()
	}
	return time.Now()
}

// The knobs resolve by internal/knob's rule (see the Handler doc): a
// negative value is 0 ("off") where off is meaningful, and panics where it
// is not.

func (h *Handler) maxBody() int64 {
	return knob.Positive("relay.Handler.MaxBodyBytes", h.MaxBodyBytes, defaultMaxBodyBytes)
}

func (h *Handler) maxEventBytes() int {
	return knob.Positive("relay.Handler.MaxEventBytes", h.MaxEventBytes, defaultMaxEventBytes)
}

func (h *Handler) maxSwitches() int {
	return max(knob.Or(h.MaxAccountSwitches, defaultMaxAccountSwitches), 0)
}

func (h *Handler) keepAlive() time.Duration { return max(knob.Or(h.KeepAlive, defaultKeepAlive), 0) }

func (h *Handler) idleTimeout() time.Duration {
	return knob.Positive("relay.Handler.StreamIdleTimeout", h.StreamIdleTimeout, defaultStreamIdleTimeout)
}

func (h *Handler) jsonHeaderTimeout() time.Duration {
	return knob.Positive("relay.Handler.JSONHeaderTimeout", h.JSONHeaderTimeout, defaultJSONHeaderTimeout)
}

func (h *Handler) clientWriteTimeout() time.Duration {
	return max(knob.Or(h.ClientWriteTimeout, defaultClientWriteTimeout), 0)
}

func (h *Handler) drainTimeout() time.Duration {
	return max(knob.Or(h.DrainTimeout, defaultDrainTimeout), 0)
}

func (h *Handler) hookTimeout() time.Duration {
	return knob.Positive("relay.Handler.HookTimeout", h.HookTimeout, defaultHookTimeout)
}

// newRequestID is "rr_" and 32 hex digits: the time in milliseconds (6
// bytes), then 10 random bytes. Ids made later sort later, so a database
// keyed by request id (a usage log, a ledger's holds) appends to its
// index instead of writing to a random page of it per record; 80 random
// bits keep ids of the same millisecond apart.
func newRequestID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	rand.Read(b[6:])
	return "rr_" + hex.EncodeToString(b[:])
}

// CloseIdleConnections closes the idle upstream connections of the
// Handler's transport, for a clean shutdown.
func (h *Handler) CloseIdleConnections() {
	h.init()
	if c, ok := h.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
