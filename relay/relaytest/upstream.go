package relaytest

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Upstream is a fake OpenAI Responses API upstream. It is an http.Handler
// that serves POST {prefix}/v1/responses, and the WebSocket mode on GET of
// the same path, where prefix is empty or "/{account}": the account name
// selects the script that applies and the store of responses that
// previous_response_id resolves against, so a response id only works on the
// account that created it.
//
// Request bodies may be gzip-compressed and are read up to 64 MiB.
//
// The zero Upstream is ready to use; New returns one. All methods are safe
// for concurrent use, also while requests are being served.
//
// Faults that cut a connection (Step.ResetBeforeHeaders, ResetAfterEvents,
// a Hang that ends, ...) hijack it; where that is impossible, as with
// HTTP/2 or an httptest.ResponseRecorder, they panic with
// http.ErrAbortHandler, which net/http turns into an aborted response.
type Upstream struct {
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
	noLog    bool
	wsMaxAge time.Duration // 0: defaultWSMaxAge; < 0: no limit
	changed  chan struct{} // closed on every change while someone waits
}

// Received is one request as the fake received it, or one message a client
// sent on a WebSocket.
type Received struct {
	// Account is the account named by the path; "" for the unprefixed path
	// and for paths outside the API.
	Account string
	// Method and Path are the request's method and URL path. A WebSocket
	// message has Method "WS" and the path of its connection's upgrade.
	Method, Path string
	// Header is a copy of the request headers; for a WebSocket message, those
	// of its connection's upgrade request (shared by its messages).
	Header http.Header
	// Body is the request body as it arrived: still compressed if the client
	// compressed it, cut after 64 MiB. For a WebSocket message, the message.
	Body []byte
	// Time is when the request reached the handler.
	Time time.Time
}

// Served describes how the fake answered one request. Every request gets
// exactly one, recorded just before the last byte of a complete answer is
// written (so a client that has read a whole response finds it), or when
// the request ended otherwise. So does every message a client sends on a
// WebSocket.
type Served struct {
	// Account is the account named by the path, as in Received.
	Account string
	// WebSocket is true for a WebSocket upgrade request and for the messages
	// of its connection; false for HTTP requests.
	WebSocket bool
	// RequestID is the x-request-id header sent; "" when no headers were sent.
	// For a WebSocket message it is that of the connection's upgrade, which
	// tells connections apart.
	RequestID string
	// ResponseID is the resp_ id of the response created; "" when the request
	// was answered with an HTTP error or cut before a response was created.
	ResponseID string
	// Model is the model as the request named it.
	Model string
	// Stream is the request's stream flag; true for WebSocket turns (every
	// response.create taken as a turn).
	Stream bool
	// HTTPStatus is the status code sent; 0 when no headers were sent. A
	// successful WebSocket upgrade has 101; a WebSocket message has the
	// status member of the error message it was answered with, else 0.
	HTTPStatus int
	// Status is one of:
	//   - "completed", "incomplete", "failed": the response ended so, in a
	//     terminal event or the JSON body (for failed: also in-band refusals)
	//   - "error": an HTTP error status was sent, or the stream ended with an
	//     error event
	//   - "aborted": the connection was cut, the client went away, or the
	//     stream ended without a terminal event
	//   - "upgraded": a WebSocket upgrade succeeded; its turns are recorded
	//     one by one
	Status string
	// Code is the error code sent (the HTTP error's code, response.error.code
	// or the error event's code); "" when none.
	Code string
	// Usage is the usage the client was sent; zero when none was sent.
	Usage Usage
	// Events is the number of SSE events (or WebSocket event messages)
	// written; 0 for JSON answers and error messages.
	Events int
}

// account is the state of one account. Guarded by Upstream.mu.
type account struct {
	key         string
	queue       []Step
	def         Step
	upQueue     []Step // steps of WebSocket upgrade requests
	upDef       Step
	inFlight    int
	maxInFlight int
	wsConns     int
	store       map[string]*stored
	order       []string          // store ids, oldest first, for eviction
	items       map[string]string // stored fc_ item id -> call_id
}

// stored is what the fake remembers of a response created with store:true.
type stored struct {
	id      string
	prev    *stored
	usage   Usage
	inCalls []string // call_ids of function_call items in its input
	outCall string   // call_id of its function call output, "" for text
	itemID  string
}

// maxStored bounds the responses kept per account so that long benchmarks
// do not grow without limit; the oldest are forgotten first.
const maxStored = 1 << 16

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
		a = &account{store: make(map[string]*stored), items: make(map[string]string)}
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

// SetKey makes account accept only the bearer token key; other tokens get a
// 401 whose message echoes a fragment of the wrong key, as the real API
// does. An empty key (the default) accepts any non-empty token.
func (u *Upstream) SetKey(account, key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acct(account).key = key
}

// Script queues steps for account; each request to the account takes the
// next one, whatever its method or content, and so does each response.create
// message on its WebSockets. WebSocket upgrade requests take theirs from
// ScriptUpgrade instead. When the queue is empty the account's default step
// applies (see SetDefault).
func (u *Upstream) Script(account string, steps ...Step) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := u.acct(account)
	a.queue = append(a.queue, steps...)
}

// SetDefault sets the step used for account when its queue is empty. The
// zero Step restores the normal behaviour.
func (u *Upstream) SetDefault(account string, s Step) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acct(account).def = s
}

// SetLogging turns the Requests and Served logs on (the default) or off.
// Turn it off for long benchmarks; the in-flight counters keep working, but
// WaitRequests and WaitServed then only return when their context ends.
func (u *Upstream) SetLogging(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.noLog = !on
}

// Reset forgets scripts, defaults, stored responses, both logs and the
// in-flight maximums. Keys set with SetKey, the logging setting and the
// WebSocket age limit stay. Requests still running are recorded when they
// finish; open WebSockets stay open and keep their connection-local response.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, a := range u.accounts {
		// Keep the struct: requests in flight still point at it.
		a.queue, a.def, a.order = nil, Step{}, nil
		a.upQueue, a.upDef = nil, Step{}
		a.maxInFlight = a.inFlight
		a.store, a.items = make(map[string]*stored), make(map[string]string)
	}
	u.requests, u.served = nil, nil
	u.notifyLocked()
}

// Requests returns a copy of every request received so far, in arrival order.
func (u *Upstream) Requests() []Received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.requests)
}

// Served returns a copy of the answers recorded so far, in the order they
// were recorded.
func (u *Upstream) Served() []Served {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.served)
}

// InFlight is the number of requests to account being answered right now.
func (u *Upstream) InFlight(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a := u.accounts[account]; a != nil {
		return a.inFlight
	}
	return 0
}

// MaxInFlight is the largest number of requests to account that were in
// flight at once since the start or the last Reset.
func (u *Upstream) MaxInFlight(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a := u.accounts[account]; a != nil {
		return a.maxInFlight
	}
	return 0
}

// WaitRequests blocks until at least n requests have been received, and
// returns them; or returns ctx.Err() when ctx ends first.
func (u *Upstream) WaitRequests(ctx context.Context, n int) ([]Received, error) {
	var out []Received
	err := u.waitFor(ctx, func() bool {
		if len(u.requests) < n {
			return false
		}
		out = slices.Clone(u.requests)
		return true
	})
	return out, err
}

// WaitServed blocks until at least n answers have been recorded, and returns
// them; or returns ctx.Err() when ctx ends first. Use it after cancelling a
// request whose answer is recorded asynchronously (Hang, IdleAfterEvents).
func (u *Upstream) WaitServed(ctx context.Context, n int) ([]Served, error) {
	var out []Served
	err := u.waitFor(ctx, func() bool {
		if len(u.served) < n {
			return false
		}
		out = slices.Clone(u.served)
		return true
	})
	return out, err
}

// WaitInFlight blocks until exactly n requests to account are in flight, or
// returns ctx.Err() when ctx ends first. With Step.Hold it lets a test line
// up concurrent requests without sleeping.
func (u *Upstream) WaitInFlight(ctx context.Context, account string, n int) error {
	return u.waitFor(ctx, func() bool {
		a := u.accounts[account]
		return (a == nil && n == 0) || (a != nil && a.inFlight == n)
	})
}

// waitFor calls cond with u.mu held until it returns true or ctx ends.
func (u *Upstream) waitFor(ctx context.Context, cond func() bool) error {
	for {
		u.mu.Lock()
		if cond() {
			u.mu.Unlock()
			return nil
		}
		if u.changed == nil {
			u.changed = make(chan struct{})
		}
		ch := u.changed
		u.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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

// record ends a request: it leaves the in-flight count of a (nil for
// requests outside the responses path) and is logged.
func (u *Upstream) record(a *account, s Served) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if a != nil {
		a.inFlight--
	}
	if !u.noLog {
		u.served = append(u.served, s)
	}
	u.notifyLocked()
}

func (u *Upstream) logRequest(r *http.Request, name string, body []byte, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.noLog {
		return
	}
	u.requests = append(u.requests, Received{Account: name, Method: r.Method, Path: r.URL.Path,
		Header: r.Header.Clone(), Body: body, Time: at})
	u.notifyLocked()
}

// resolve finds the previous response and checks function call outputs
// against what the account knows, as the real API does. local is a
// WebSocket's connection-local response (nil over HTTP); it resolves even
// when it was not stored.
func (u *Upstream) resolve(a *account, q *request, local *stored) (*stored, *apiError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var prev *stored
	if q.prevID != "" {
		prev = a.store[q.prevID]
		if local != nil && local.id == q.prevID {
			prev = local
		}
		if prev == nil {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "previous_response_id",
				code: "previous_response_not_found", msg: "Previous response with id '" + q.prevID + "' not found."}
		}
		if prev.outCall != "" && !slices.Contains(q.outputs, prev.outCall) {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "No tool output found for function call " + prev.outCall + "."}
		}
	}
	for _, id := range q.outputs {
		if !slices.Contains(q.calls, id) && !prev.knows(id) && !a.referenced(q.refs, id) {
			return nil, &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "No tool call found for function call output with call_id " + id + "."}
		}
	}
	return prev, nil
}

// knows reports whether call id appears in the chain ending at s.
func (s *stored) knows(id string) bool {
	for ; s != nil; s = s.prev {
		if s.outCall == id || slices.Contains(s.inCalls, id) {
			return true
		}
	}
	return false
}

// referenced reports whether one of the item references is a stored
// function call with call id.
func (a *account) referenced(refs []string, id string) bool {
	for _, r := range refs {
		if a.items[r] == id {
			return true
		}
	}
	return false
}

// newStored is what later turns need to know of t's response.
func newStored(t *turn, prev *stored) *stored {
	s := &stored{id: t.id, prev: prev, usage: t.usage, inCalls: t.req.calls}
	if t.fc {
		s.outCall, s.itemID = t.callID, t.itemID
	}
	return s
}

// save stores s for later previous_response_id lookups.
func (u *Upstream) save(a *account, s *stored) {
	u.mu.Lock()
	defer u.mu.Unlock()
	a.store[s.id] = s
	if s.itemID != "" {
		a.items[s.itemID] = s.outCall
	}
	a.order = append(a.order, s.id)
	for len(a.order) > maxStored {
		old := a.store[a.order[0]]
		delete(a.store, a.order[0])
		if old != nil && old.itemID != "" {
			delete(a.items, old.itemID)
		}
		a.order = a.order[1:]
	}
}

// route returns the account named by a responses path.
func route(path string) (name string, ok bool) {
	const suffix = "/v1/responses"
	prefix, found := strings.CutSuffix(path, suffix)
	if !found {
		return "", false
	}
	if prefix == "" {
		return "", true
	}
	if len(prefix) < 2 || prefix[0] != '/' || strings.Contains(prefix[1:], "/") {
		return "", false
	}
	return prefix[1:], true
}

// ServeHTTP answers one request: POST {prefix}/v1/responses runs a turn,
// GET on the same path with WebSocket upgrade headers opens a WebSocket (a
// GET without them gets 426 Upgrade Required), anything else is 404 or 405.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.setup()
	u.handlers.Add(1)
	defer u.handlers.Done()
	x := &exchange{u: u, w: w, r: r, start: time.Now()}
	name, ok := route(r.URL.Path)
	upgrade := isUpgrade(r)
	x.served.Account, x.served.WebSocket = name, upgrade
	body, readErr := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	u.logRequest(r, name, body, x.start)
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
	if s.Hold != nil && !u.wait(ctx, s.Hold, 0) {
		x.abort(false)
		return
	}
	if s.ResetBeforeHeaders {
		x.abort(true)
		return
	}
	if s.Hang {
		u.wait(ctx, nil, 0)
		x.abort(false)
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
	if len(body) > maxBody {
		x.writeError(&apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest,
			msg: "Request body too large."})
		return
	}
	body, e := decodeBody(r.Header.Get("Content-Encoding"), body)
	if e != nil {
		x.writeError(e)
		return
	}
	q, e := parseRequest(body)
	if e != nil {
		x.writeError(e)
		return
	}
	x.served.Model, x.served.Stream = q.model, q.stream
	prev, e := u.resolve(x.acct, q, nil)
	if e != nil {
		x.writeError(e)
		return
	}
	t := newTurn(q, s, prev, x.start.Unix())
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

// authenticate checks the bearer token against the account's key.
func (u *Upstream) authenticate(a *account, r *http.Request) *apiError {
	auth := r.Header.Get("Authorization")
	token := ""
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		token = strings.TrimSpace(auth[7:])
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
