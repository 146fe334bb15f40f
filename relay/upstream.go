package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/sjson"
)

// maxErrorBody caps how much of an upstream error body is read.
const maxErrorBody = 64 << 10

var errNotEventStream = errors.New("upstream answered a streaming request without an event stream")

// turnAttempt is the attempts' state, written by try (and answeredStream):
// upstream serves accounts with WebSocket set (nil: an HTTP POST; set at
// entry), n counts the attempts, token is the current attempt's credential
// (for sanitizing), and reached reports that some upstream answered
// (response headers, a first frame, or a refusal with a status): only then
// is a usage record written.
type turnAttempt struct {
	upstream socketUpstream
	n        int
	token    string
	reached  bool
	assemble bool // this attempt streams for a JSON client (answer_assembled.go)
}

// try runs one attempt on sel. nil means the turn was served (including a
// stream that broke after output) and recorded.
func (t *turn) try(sel *scheduler.Selection) *attemptError {
	h, acct := t.h, sel.Account
	t.up.n++
	token, ae := t.credentials(acct)
	if ae != nil {
		return ae
	}
	t.up.token = token
	if err := CheckBodyPatch(acct.BodyPatch); err != nil {
		h.accountUnusable(acct, err)
		return &attemptError{kind: failAccount, account: acct.ID, err: err}
	}
	t.up.assemble = t.assemblesStream(acct)
	streams := t.in.req.Stream || t.up.assemble

	// The upstream call outlives the client by up to DrainTimeout, so that
	// a turn the upstream is already running still reports its usage.
	uctx, cancel := context.WithCancel(context.WithoutCancel(t.ctx))
	defer cancel()
	ac := &attemptCtl{cancel: cancel, drain: h.drainTimeout()}
	abort := ac.abort
	headerTimeout := h.jsonHeaderTimeout()
	if streams {
		headerTimeout = h.idleTimeout()
	}
	headerTimer := time.AfterFunc(headerTimeout, abort)
	stopGone := context.AfterFunc(t.ctx, ac.clientGone)
	defer func() {
		stopGone()
		ac.stop()
	}()

	if t.up.upstream != nil && acct.WebSocket && !isChat(acct) {
		ae, bridge := t.tryUpstream(sel, uctx, token, abort, headerTimer)
		if !bridge {
			return ae
		}
		headerTimer.Reset(headerTimeout) // the bridged request gets its own wait
	}
	upreq, err := t.upstreamRequest(uctx, sel, token)
	if err != nil {
		headerTimer.Stop()
		return bodyError(acct.ID, err)
	}
	resp, err := h.transport.RoundTrip(upreq)
	headerTimer.Stop()
	if err != nil {
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: err})
		return &attemptError{kind: failConn, account: acct.ID, err: err, idleAbort: ac.aborted.Load()}
	}
	t.up.reached = true
	if resp.StatusCode < 400 && streams && isEventStream(resp.Header.Get("Content-Type")) {
		return t.answerStream(sel, resp, abort)
	}
	return t.answer(sel, resp, abort)
}

// answerStream relays an upstream's event stream. A stream's goroutine
// waits under this frame and try's, so the other answers are in a frame
// of their own (answer) and this one stays small (see relayEvents).
//
//go:noinline
func (t *turn) answerStream(sel *scheduler.Selection, resp *http.Response, abort func()) *attemptError {
	defer resp.Body.Close()
	src := newSSESource(resp.Body, t.h.MaxEventBytes)
	defer src.free()
	var events pump.Source = src
	if isChat(sel.Account) {
		events = t.newChatSource(src)
	}
	var ae *attemptError
	if t.up.assemble {
		ae = t.relayAssembled(sel, events, resp.StatusCode, resp.Header, abort)
	} else {
		ae = t.relayEvents(sel, events, resp.StatusCode, resp.Header, abort)
	}
	if ae == nil {
		readTail(resp.Body, abort)
	}
	return ae
}

// Bounds of readTail.
const (
	tailBytes = 4 << 10
	tailWait  = 50 * time.Millisecond
)

// readTail reads what an upstream sends after a stream's terminal event
// until its body ends: over HTTP/1.1 net/http keeps a connection only for
// a body read to its end, and the end of a chunked body (written when the
// upstream's handler returns) often comes just after the last event, so
// closing at the terminal event lost the connection (and cost the next
// turn a new one) once every few dozen turns. At most tailBytes and
// tailWait: an upstream that goes on, or stays open, loses its connection
// as before. The client has had the terminal event; it waits at most
// tailWait more for the end of its answer.
func readTail(body io.Reader, abort func()) {
	stop := time.AfterFunc(tailWait, abort)
	io.CopyN(io.Discard, body, tailBytes)
	stop.Stop()
}

// answer relays an upstream's answer other than an event stream: an error
// status, or JSON.
//
//go:noinline
func (t *turn) answer(sel *scheduler.Selection, resp *http.Response, abort func()) *attemptError {
	h, acct := t.h, sel.Account
	defer resp.Body.Close()

	if resp.StatusCode >= 400 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return t.statusError(acct, resp.StatusCode, resp.Header, raw, []string{t.up.token})
	}
	if t.client.out != nil && t.client.w == nil {
		// Another transport asked for events and got a JSON answer.
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: errNotEventStream})
		return &attemptError{kind: failInBand, account: acct.ID, err: errNotEventStream}
	}
	return t.relayJSON(sel, resp, abort)
}

// credentials is the account's upstream token: "" without Credentials.
// A StaticKeys lookup is called directly (a map lookup cannot hang: no
// bounded call and its goroutine); any other Credentials is a bounded
// hook.
func (t *turn) credentials(acct *scheduler.Account) (string, *attemptError) {
	if renewed := t.renewedToken(); renewed != "" {
		return renewed, nil
	}
	got, err := t.h.token(t.ctx, acct, t.hook)
	if err != nil {
		if t.ctx.Err() == nil {
			t.h.log.Error("relay: no credentials for account", "request_id", t.in.id, "account", acct.ID, "error", err)
		}
		return "", &attemptError{kind: failCredentials, account: acct.ID, err: err}
	}
	return got, nil
}

// token is the account's upstream token: "" without Credentials. A
// StaticKeys lookup is called directly (a map lookup cannot hang: no
// bounded call and its goroutine); any other Credentials goes through
// call, the caller's bound on host code.
func (h *Handler) token(ctx context.Context, acct *scheduler.Account, call func(context.Context, func(context.Context) error) error) (string, error) {
	if keys, ok := h.Credentials.(scheduler.StaticKeys); ok {
		return keys.Token(ctx, acct)
	}
	if h.Credentials == nil {
		return "", nil
	}
	var got string // written by the hook; read only if it was not abandoned
	err := call(ctx, func(ctx context.Context) error {
		var err error
		got, err = h.Credentials.Token(ctx, acct)
		return err
	})
	return got, err
}

// tryUpstream runs an attempt through Turn.Upstream (a WebSocket upstream).
// bridge reports that Open declined with errUseHTTP: the attempt goes
// through the HTTP bridge instead.
func (t *turn) tryUpstream(sel *scheduler.Selection, uctx context.Context, token string, abort func(), headerTimer *time.Timer) (ae *attemptError, bridge bool) {
	h, acct := t.h, sel.Account
	body, err := t.upstreamBody(sel, false)
	if err == nil && len(acct.BodyPatch) > 0 {
		body, err = applyBodyPatch(body, acct.BodyPatch)
	}
	if err != nil {
		headerTimer.Stop()
		return bodyError(acct.ID, err), false
	}
	st, err := t.up.upstream.Open(uctx, acct, token, body)
	headerTimer.Stop()
	if err != nil {
		if errors.Is(err, errUseHTTP) {
			return nil, true
		}
		var ue *UpstreamError
		if errors.As(err, &ue) && ue.Status > 0 {
			t.up.reached = true
			return t.statusError(acct, ue.Status, ue.Header, ue.Body, []string{token}), false
		}
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: err})
		return &attemptError{kind: failConn, account: acct.ID, err: err}, false
	}
	defer st.Close()
	as := &answeredStream{eventStream: st, t: t}
	as.pending, _ = st.(interface{ Pending() bool })
	return t.relayEvents(sel, as, 0, nil, abort), false
}

// answeredStream marks the turn as reached at the upstream's first frame
// (or a refusal with a status), as response headers do over HTTP: a
// message the upstream never answered is not a usage record.
type answeredStream struct {
	eventStream
	t       *turn
	pending interface{ Pending() bool } // the stream, when it can tell
}

// Pending passes on the stream's own Pending, if it has one.
func (s *answeredStream) Pending() bool {
	return s.pending != nil && s.pending.Pending()
}

func (s *answeredStream) Next() ([]byte, error) {
	data, err := s.eventStream.Next()
	if !s.t.up.reached {
		var ue *UpstreamError
		if err == nil || errors.As(err, &ue) && ue.Status > 0 {
			s.t.up.reached = true
		}
	}
	return data, err
}

// observe reports an outcome to the scheduler, which bounds its own
// OnAccountEvent hook (Scheduler.EventTimeout).
func (h *Handler) observe(accountID string, o scheduler.Outcome) {
	h.Scheduler.Observe(accountID, o)
}

// statusError reports an upstream's error status to the scheduler and
// returns the attempt error that steers failover. The body is sanitized.
func (t *turn) statusError(acct *scheduler.Account, status int, header http.Header, raw []byte, secrets []string) *attemptError {
	body := sanitize(raw, secrets...)
	ae := &attemptError{kind: failStatus, account: acct.ID, status: status, header: header, body: body, secrets: secrets}
	hold, why := t.rejected(ae) // a 401 the Credentials may renew (credentials_refresh.go)
	if hold {
		return ae
	}
	kind := scheduler.OutcomeStatus
	if !ae.retryable() {
		kind = scheduler.OutcomeClientError
	}
	t.h.observe(acct.ID, scheduler.Outcome{Kind: kind, Status: status, Header: header, Body: body, Err: why})
	return ae
}

func isEventStream(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// upstreamBody is the request body for the account: the chain sent whole
// when the account cannot know the previous response (needsRebuild),
// reasoning items it could not decrypt left out, the model rewritten.
// viaHTTP: the body goes as a POST (a WebSocket turn's bridge too). An
// *APIError means the body cannot be built: the client gets it as is.
func (t *turn) upstreamBody(sel *scheduler.Selection, viaHTTP bool) ([]byte, error) {
	body := t.in.req.Body
	acct := sel.Account.ID
	t.conv.rebuilt, t.conv.removed, t.conv.chatNoUsage = false, 0, false
	t.conv.stateless = isChat(sel.Account)
	if t.conv.stateless && t.conv.prev == nil && t.in.req.PreviousResponseID != "" {
		// Nothing to send it whole from; the upstream could not know it.
		return nil, errPreviousNotFound(t.in.req.PreviousResponseID)
	}
	if t.conv.needsRebuild(acct, viaHTTP) {
		rebuilt, removed, apiErr := t.rebuildBody(body, acct)
		if apiErr != nil {
			return nil, apiErr
		}
		body, t.conv.removed = rebuilt, removed
		t.conv.rebuilt, t.conv.everRebuilt = true, true
	}
	body, removed := t.dropForeignItems(body, acct)
	t.conv.removed += removed
	if sel.UpstreamModel != "" && sel.UpstreamModel != t.in.req.Model {
		return sjson.SetBytes(body, "model", sel.UpstreamModel)
	}
	return body, nil
}

// bodyError is the attempt error of a body upstreamBody could not build.
func bodyError(acct string, err error) *attemptError {
	if ae, ok := errors.AsType[*APIError](err); ok {
		return &attemptError{kind: failRequest, account: acct, err: err, answer: ae}
	}
	return &attemptError{kind: failConn, account: acct, err: err}
}

// bridgeBody turns a WebSocket response.create message into a streaming
// POST body: no "type", "stream": true.
func bridgeBody(body []byte) ([]byte, error) {
	body, err := sjson.DeleteBytes(body, "type")
	if err != nil {
		return nil, err
	}
	return sjson.SetBytes(body, "stream", true)
}

// upstreamRequest builds POST {BaseURL}/responses for the account.
func (t *turn) upstreamRequest(ctx context.Context, sel *scheduler.Selection, token string) (*http.Request, error) {
	body, err := t.upstreamBody(sel, true)
	if err != nil {
		return nil, err
	}
	if t.in.transport != "http" {
		if body, err = bridgeBody(body); err != nil {
			return nil, err
		}
	}
	if t.conv.compactByTrigger {
		if body, err = triggerBody(body); err != nil {
			return nil, err
		}
	}
	if t.up.assemble {
		if body, err = sjson.SetBytes(body, "stream", true); err != nil {
			return nil, err
		}
	}
	path := t.compactPath()
	if isChat(sel.Account) {
		if body, err = t.chatBody(body, sel); err != nil {
			return nil, err
		}
		path = "/chat/completions"
	}
	r, err := t.h.accountRequest(ctx, sel.Account, http.MethodPost, path, "", body, t.in.header, token)
	if err != nil {
		return nil, err
	}
	if t.in.req.Stream || t.up.assemble {
		r.Header["Accept"] = headerEventStream
	}
	return r, nil
}

// accountRequest is a request to acct: path after its BaseURL, the query
// with the account's own Query added, the client headers in passed by the
// one header policy, the account's own headers and its token (in its
// AuthHeader), a body with its BodyPatch applied. A body is buffered: the
// transport may retry it on a reused connection, and it never races the
// inbound body's close.
func (h *Handler) accountRequest(ctx context.Context, acct *scheduler.Account, method, path, query string, body []byte, in http.Header, token string) (*http.Request, error) {
	u := trimSlash(acct.BaseURL) + path
	if len(acct.Query) > 0 {
		if query != "" {
			query += "&"
		}
		query += acct.Query.Encode()
	}
	if query != "" {
		u += "?" + query
	}
	if body != nil && len(acct.BodyPatch) > 0 {
		var err error
		if body, err = applyBodyPatch(body, acct.BodyPatch); err != nil {
			return nil, err
		}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		r.ContentLength = int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		// Shared, never modified value slices: fewer allocations per attempt.
		r.Header["Content-Type"] = headerJSON
	}
	if in != nil {
		headers.Forward(r.Header, in, h.ForwardHeaders)
	}
	for k, vs := range acct.Header {
		r.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	setAuth(r.Header, acct, token, h.bearer)
	return r, nil
}

var (
	headerJSON        = []string{"application/json"}
	headerEventStream = []string{"text/event-stream"}
)

// setAuth puts token in acct's AuthHeader: "Authorization: Bearer" by
// default (bearer builds that value), the bare token in any other header.
func setAuth(hdr http.Header, acct *scheduler.Account, token string, bearer func(string) []string) {
	if token == "" {
		return
	}
	name := acct.AuthHeader
	if name == "" || strings.EqualFold(name, "Authorization") {
		hdr["Authorization"] = bearer(token)
		return
	}
	hdr[http.CanonicalHeaderKey(name)] = []string{token}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// attemptCtl aborts one attempt: on an idle or slow upstream, or
// DrainTimeout after the client left.
type attemptCtl struct {
	cancel     context.CancelFunc
	drain      time.Duration
	aborted    atomic.Bool
	drainTimer atomic.Pointer[time.Timer]
}

func (a *attemptCtl) abort() { a.aborted.Store(true); a.cancel() }

// clientGone gives the upstream DrainTimeout more to report its usage.
func (a *attemptCtl) clientGone() {
	if a.drain > 0 {
		a.drainTimer.Store(time.AfterFunc(a.drain, a.abort))
	} else {
		a.abort()
	}
}

func (a *attemptCtl) stop() {
	if tm := a.drainTimer.Load(); tm != nil {
		tm.Stop()
	}
}
