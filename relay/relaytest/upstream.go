package relaytest

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is a fake OpenAI Responses API upstream. It is an http.Handler
// that serves POST {prefix}/v1/responses, the WebSocket mode on GET of the
// same path, and the other routes the package documentation lists under
// {prefix}/v1, where prefix is empty or "/{account}": the account name
// selects the script that applies and the store of responses that
// previous_response_id resolves against, so a response id only works on the
// account that created it.
//
// Request bodies may be gzip-compressed and are read up to 64 MiB.
//
// The zero Upstream is ready to use; New returns one. All methods are safe
// for concurrent use, also while requests are being served; the fields are
// not, so set them while no request is in flight.
//
// Faults that cut a connection (Step.Cut, a Step.Hold that never ends, ...) hijack it; where that is impossible, as with
// HTTP/2 or an httptest.ResponseRecorder, they panic with
// http.ErrAbortHandler, which net/http turns into an aborted response.
type Upstream struct {
	// NoLog keeps the Requests and Served logs empty; set it before first
	// use, for long benchmarks and demos whose logs would grow without
	// bound. The in-flight counters keep working.
	NoLog bool
	// WSMaxAge is the age at which WebSocket connections expire, as the real
	// service's limit does: the first response.create received after it is
	// answered with an error message whose code is
	// "websocket_connection_limit_reached", and the connection is then
	// closed with status 1000. A turn in flight is not interrupted. It is
	// read at every response.create, so a test may change it between turns
	// to expire an open connection without waiting. 0: 60 minutes;
	// negative: no limit.
	WSMaxAge time.Duration

	setupOnce sync.Once
	closeOnce sync.Once
	closing   chan struct{} // closed by shutdown: hung requests give up
	ctx       context.Context
	stop      context.CancelFunc // cancels ctx at shutdown: WebSockets close
	handlers  sync.WaitGroup

	mu       sync.Mutex
	accounts map[string]*account
	requests []Received
	served   []Served
	seq      int64         // the last Received.Seq given out
	changed  chan struct{} // closed on every change while someone waits
}

// account is the state of one account. Guarded by Upstream.mu.
type account struct {
	name        string
	key         string
	streamOnly  bool
	queue       []Step
	def         Step
	upQueue     []Step // steps of WebSocket upgrade requests
	upDef       Step
	inFlight    int
	maxInFlight int
	wsConns     int
	store       map[string]*stored
	order       []string            // store ids, oldest first, for eviction
	kept        int                 // request bytes kept by the stored responses
	items       map[string]string   // stored fc_ item id -> call_id
	sealed      map[string]struct{} // stored rs_ and cmp_ item ids
	blobs       atomic.Uint64       // encrypted contents made, for their IVs
}

// maxBody is the largest request body the fake reads.
const maxBody = 64 << 20

// New returns an Upstream without a listener, for use with httptest or any
// http.Server. Every account answers normally until scripted.
func New() *Upstream {
	u := &Upstream{}
	u.setup()
	return u
}

func (u *Upstream) setup() {
	u.setupOnce.Do(func() {
		u.closing = make(chan struct{})
		u.ctx, u.stop = context.WithCancel(context.Background())
	})
}

// shutdown makes every held, hung or idle request give up and close its
// connection, WebSockets included.
func (u *Upstream) shutdown() {
	u.setup()
	u.closeOnce.Do(func() {
		close(u.closing)
		u.stop()
	})
}

// acct returns the named account, creating it. u.mu must be held.
func (u *Upstream) acct(name string) *account {
	a := u.accounts[name]
	if a == nil {
		if u.accounts == nil {
			u.accounts = make(map[string]*account)
		}
		a = &account{name: name, store: make(map[string]*stored), items: make(map[string]string),
			sealed: make(map[string]struct{})}
		u.accounts[name] = a
	}
	return a
}

// notifyLocked wakes the Wait methods. u.mu must be held.
func (u *Upstream) notifyLocked() {
	if u.changed != nil {
		close(u.changed)
		u.changed = nil
	}
}

// SetKey makes account accept only the token key; other tokens get a 401
// whose message echoes a fragment of the wrong key, as the real API does.
// The token is read from "Authorization: Bearer", or else from an
// "api-key" header, as Azure OpenAI sends it. An empty key (the default)
// accepts any non-empty token.
func (u *Upstream) SetKey(account, key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acct(account).key = key
}

// Script queues steps for account; each request to the account takes the
// next one, whatever its route, method or content, and so does each response.create
// message on its WebSockets. Steps with Upgrade set go to a separate queue
// that the account's WebSocket upgrade requests take from. When a queue is
// empty the account's default step for it applies (see SetDefault).
func (u *Upstream) Script(account string, steps ...Step) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := u.acct(account)
	for _, s := range steps {
		if s.Upgrade {
			a.upQueue = append(a.upQueue, s)
		} else {
			a.queue = append(a.queue, s)
		}
	}
}

// SetDefault sets the step used for account when its queue is empty: the
// queue of upgrade requests when s.Upgrade is set, else that of turns. The
// zero Step (with Upgrade set or not) restores the normal behaviour.
func (u *Upstream) SetDefault(account string, s Step) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s.Upgrade {
		u.acct(account).upDef = s
	} else {
		u.acct(account).def = s
	}
}

// Reset forgets scripts, defaults, stored responses, both logs and the
// in-flight maximums. Keys set with SetKey, NoLog and WSMaxAge stay;
// background jobs run on, their responses no longer reachable. Requests still running are recorded when they
// finish; open WebSockets stay open and keep their connection-local response.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, a := range u.accounts {
		// Keep the struct: requests in flight still point at it.
		a.queue, a.def, a.order = nil, Step{}, nil
		a.upQueue, a.upDef = nil, Step{}
		a.maxInFlight = a.inFlight
		a.store, a.items, a.kept = make(map[string]*stored), make(map[string]string), 0
		a.sealed = make(map[string]struct{})
	}
	u.requests, u.served = nil, nil
	u.notifyLocked()
}

// begin counts a request to account as in flight and takes its step: from
// the upgrade script for a WebSocket upgrade, else from the script.
func (u *Upstream) begin(name string, upgrade bool) (*account, Step) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := u.acct(name)
	a.inFlight++
	a.maxInFlight = max(a.maxInFlight, a.inFlight)
	queue, s := &a.queue, a.def
	if upgrade {
		queue, s = &a.upQueue, a.upDef
	}
	if q := *queue; len(q) > 0 {
		s = q[0]
		q[0] = Step{} // drop references held by the step
		*queue = q[1:]
	}
	u.notifyLocked()
	return a, s
}

// ServeHTTP answers one request: POST {prefix}/v1/responses runs a turn,
// GET on the same path with WebSocket upgrade headers opens a WebSocket (a
// GET without them gets 426 Upgrade Required), the other routes are as the
// package documentation says, anything else is 404 or 405.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.setup()
	u.handlers.Add(1)
	defer u.handlers.Done()
	x := &exchange{u: u, w: w, r: r, start: time.Now()}
	name, rest, ok := route(r.URL.Path)
	upgrade := isUpgrade(r) && rest == pathResponses
	x.served.Account, x.served.WebSocket = name, upgrade
	body, readErr := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	x.served.Seq = u.logRequest(r, name, body)
	if !ok {
		x.writeError(&apiError{status: 404, typ: typeInvalidRequest,
			msg: "Invalid URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	x.acct, x.step = u.begin(name, upgrade)
	defer x.finish(statusAborted) // for panics and early returns; no-op otherwise

	ctx := r.Context()
	s := &x.step
	if readErr != nil {
		x.abort(false)
		return
	}
	// A background create answers at once: its Hold holds the work instead.
	if s.After == 0 && s.Hold != nil && !(rest == pathResponses && r.Method == http.MethodPost && isBackground(r, body)) &&
		!u.wait(ctx, s.Hold, 0) {
		x.abort(false)
		return
	}
	if s.After == 0 && s.Cut {
		x.abort(true)
		return
	}
	if s.Status != 0 {
		x.scripted()
		return
	}
	if e := u.authenticate(x.acct, r); e != nil {
		x.writeError(e)
		return
	}
	if rest != pathResponses {
		x.serveRoute(rest, body)
		return
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodGet:
		if upgrade {
			x.serveWebSocket()
			return
		}
		w.Header().Set("Upgrade", "websocket")
		x.writeError(&apiError{status: http.StatusUpgradeRequired, typ: typeInvalidRequest,
			msg: "This endpoint expects a WebSocket upgrade on GET; use POST for HTTP."})
		return
	default:
		w.Header().Set("Allow", "GET, POST")
		x.writeError(&apiError{status: http.StatusMethodNotAllowed, typ: typeInvalidRequest,
			msg: "Invalid method for URL (" + r.Method + " " + r.URL.Path + ")"})
		return
	}
	q, prev, ok := x.parse(body)
	if !ok {
		return
	}
	if !q.stream && !q.background && x.u.refusesJSON(x.acct) {
		x.writeError(errStreamOnly)
		return
	}
	t := newTurn(q, s, prev, x.start.Unix(), x.acct)
	if q.background {
		x.background(t, prev)
		return
	}
	if q.store {
		u.save(x.acct, newStored(t, prev))
	}
	x.served.ResponseID = t.id
	if q.stream {
		x.stream(t)
	} else {
		x.json(t)
	}
}

// parse reads a create-like body (a create, a compaction, a token count)
// and resolves its previous response; on failure it has answered.
func (x *exchange) parse(body []byte) (*request, *stored, bool) {
	body, ok := x.decoded(body)
	if !ok {
		return nil, nil, false
	}
	q, e := parseRequest(body)
	if e != nil {
		x.writeError(e)
		return nil, nil, false
	}
	prev, e := x.u.resolve(x.acct, q, nil)
	if e != nil {
		x.writeError(e)
		return nil, nil, false
	}
	return q, prev, true
}

// decoded checks the size of a request body and undoes its
// Content-Encoding; on failure it has answered.
func (x *exchange) decoded(body []byte) ([]byte, bool) {
	if len(body) > maxBody {
		x.writeError(&apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest,
			msg: "Request body too large."})
		return nil, false
	}
	body, e := decodeBody(x.r.Header.Get("Content-Encoding"), body)
	if e != nil {
		x.writeError(e)
		return nil, false
	}
	return body, true
}

// SetStreamOnly makes account refuse requests without "stream": true
// (creates and Chat Completions; background creates are exempt) with a 400
// naming the parameter, as upstreams that only stream answer.
func (u *Upstream) SetStreamOnly(account string, on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acct(account).streamOnly = on
}

func (u *Upstream) refusesJSON(a *account) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return a.streamOnly
}

var errStreamOnly = &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, param: "stream",
	msg: "This account only accepts streaming requests: set 'stream' to true."}

// authenticate checks the bearer token against the account's key.
func (u *Upstream) authenticate(a *account, r *http.Request) *apiError {
	auth := r.Header.Get("Authorization")
	token := ""
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		token = strings.TrimSpace(auth[7:])
	} else if auth == "" {
		token = strings.TrimSpace(r.Header.Get("Api-Key"))
	}
	if token == "" {
		return &apiError{status: 401, typ: typeAuthentication,
			msg: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."}
	}
	u.mu.Lock()
	key := a.key
	u.mu.Unlock()
	if key != "" && token != key {
		return &apiError{status: 401, typ: typeAuthentication, code: "invalid_api_key",
			msg: "Incorrect API key provided: " + keyFragment(token) + ". You can find your API key at https://platform.openai.com/account/api-keys."}
	}
	return nil
}

// decodeBody undoes a Content-Encoding the fake understands.
func decodeBody(enc string, body []byte) ([]byte, *apiError) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(zr, maxBody))
		}
		if err != nil {
			return nil, errInvalidJSON
		}
		return body, nil
	default:
		return nil, &apiError{status: http.StatusUnsupportedMediaType, typ: typeInvalidRequest,
			msg: "Unsupported Content-Encoding " + strconv.Quote(enc) + "."}
	}
}

// wait blocks until ch is closed (never, when nil), d has passed (never,
// when 0), ctx ends or the upstream shuts down. It reports whether ch or d
// came first.
func (u *Upstream) wait(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
		return true
	case <-timeout:
		return true
	case <-ctx.Done():
		return false
	case <-u.closing:
		return false
	}
}
