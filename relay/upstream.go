package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/relaykit/responsesrelay/internal/pump"
	"github.com/relaykit/responsesrelay/internal/sse"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// maxErrorBody caps how much of an upstream error body is read.
const maxErrorBody = 64 << 10

// attemptKind says how an upstream attempt failed.
type attemptKind int

const (
	failConn        attemptKind = iota // no response headers (dial, reset, header timeout)
	failStatus                         // an HTTP error status
	failInBand                         // a 200 stream refused before output, or ended before any event
	failCredentials                    // no token for the account
)

// attemptError is one failed upstream attempt; it steers the failover loop.
type attemptError struct {
	kind      attemptKind
	account   string
	status    int
	header    http.Header
	body      []byte // sanitized
	refusal   []byte // in-band refusing event
	err       error
	secrets   []string
	idleAbort bool
}

func (e *attemptError) Error() string {
	switch e.kind {
	case failStatus:
		return fmt.Sprintf("upstream status %d", e.status)
	case failInBand:
		if e.refusal != nil {
			return "in-band refusal: " + inBandCode(e.refusal)
		}
		return fmt.Sprintf("stream ended before any event: %v", e.err)
	case failCredentials:
		return fmt.Sprintf("credentials: %v", e.err)
	}
	return fmt.Sprintf("connection: %v", e.err)
}

// retryable is the failover predicate (ARCHITECTURE.md, "Failover predicate"): connection errors,
// 401/402/403/408/429/529/5xx, and in-band refusals move to another account;
// other 4xx are the request's fault and go back to the client.
func (e *attemptError) retryable() bool {
	switch e.kind {
	case failConn, failInBand, failCredentials:
		return true
	}
	switch s := e.status; {
	case s == 401, s == 402, s == 403, s == 408, s == 429, s == 529, s >= 500:
		return true
	}
	return false
}

func inBandCode(ev []byte) string {
	if c := gjson.GetBytes(ev, "response.error.code").String(); c != "" {
		return c
	}
	if c := gjson.GetBytes(ev, "error.code").String(); c != "" {
		return c
	}
	return gjson.GetBytes(ev, "code").String()
}

// try runs one attempt on sel. nil means the turn was served (including a
// stream that broke after output) and recorded.
func (t *turn) try(sel *scheduler.Selection) *attemptError {
	h, acct := t.h, sel.Account
	t.attempt++
	token := ""
	if keys, ok := h.Credentials.(scheduler.StaticKeys); ok {
		// A map lookup cannot hang: no bounded call (and its goroutine).
		got, err := keys.Token(t.ctx, acct)
		if err != nil {
			h.log.Error("relay: no credentials for account", "request_id", t.id, "account", acct.ID, "error", err)
			return &attemptError{kind: failCredentials, account: acct.ID, err: err}
		}
		token = got
	} else if h.Credentials != nil {
		var got string // written by the hook; read only if it was not abandoned
		err := t.hook(t.ctx, func(ctx context.Context) error {
			var err error
			got, err = h.Credentials.Token(ctx, acct)
			return err
		})
		if err != nil {
			if t.ctx.Err() == nil {
				h.log.Error("relay: no credentials for account", "request_id", t.id, "account", acct.ID, "error", err)
			}
			return &attemptError{kind: failCredentials, account: acct.ID, err: err}
		}
		token = got
	}
	t.token = token

	// The upstream call outlives the client by up to DrainTimeout, so that
	// a turn the upstream is already running still reports its usage.
	uctx, cancel := context.WithCancel(context.WithoutCancel(t.ctx))
	defer cancel()
	ac := &attemptCtl{cancel: cancel, drain: h.drainTimeout()}
	abort := ac.abort
	headerTimeout := h.jsonHeaderTimeout()
	if t.req.Stream {
		headerTimeout = h.idleTimeout()
	}
	headerTimer := time.AfterFunc(headerTimeout, abort)
	stopGone := context.AfterFunc(t.ctx, ac.clientGone)
	defer func() {
		stopGone()
		ac.stop()
	}()

	if t.upstream != nil && acct.WebSocket {
		ae, bridge := t.tryUpstream(sel, uctx, token, abort, headerTimer)
		if !bridge {
			return ae
		}
		headerTimer.Reset(headerTimeout) // the bridged request gets its own wait
	}
	upreq, err := t.upstreamRequest(uctx, sel, token)
	if err != nil {
		headerTimer.Stop()
		return &attemptError{kind: failConn, account: acct.ID, err: err}
	}
	resp, err := h.transport.RoundTrip(upreq)
	headerTimer.Stop()
	if err != nil {
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: err})
		return &attemptError{kind: failConn, account: acct.ID, err: err, idleAbort: ac.aborted.Load()}
	}
	t.reached = true
	defer resp.Body.Close()

	if resp.StatusCode >= 400 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return t.statusError(acct, resp.StatusCode, resp.Header, raw, []string{token})
	}

	if t.req.Stream && isEventStream(resp.Header.Get("Content-Type")) {
		src := newSSESource(resp.Body, h.MaxEventBytes)
		defer src.free()
		return t.relayEvents(sel, src, resp.StatusCode, resp.Header, abort)
	}
	if t.out != nil && t.w == nil {
		// Another transport asked for events and got a JSON answer.
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: errNotEventStream})
		return &attemptError{kind: failInBand, account: acct.ID, err: errNotEventStream}
	}
	return t.relayJSON(sel, resp, abort)
}

var (
	errNotEventStream = errors.New("upstream answered a streaming request without an event stream")
	errNotJSON        = errors.New("upstream answered a JSON request with a body that is not a JSON object")
	errJSONTooLarge   = errors.New("upstream answer larger than MaxEventBytes")
)

// isJSONObject reports whether an upstream's body is one JSON object no
// deeper than jsonx.MaxDepth: gjson validates recursively, so the depth is
// checked first.
func isJSONObject(b []byte) bool {
	return validJSON(b) && gjson.ParseBytes(b).IsObject()
}

// validJSON is gjson.ValidBytes for untrusted bytes: a document nested
// deeper than jsonx.MaxDepth is invalid without being parsed.
func validJSON(b []byte) bool {
	return !jsonx.DepthExceeds(b, jsonx.MaxDepth) && gjson.ValidBytes(b)
}

// tryUpstream runs an attempt through Turn.Upstream (a WebSocket upstream).
// bridge reports that Open declined with ErrUseHTTP: the attempt goes
// through the HTTP bridge instead.
func (t *turn) tryUpstream(sel *scheduler.Selection, uctx context.Context, token string, abort func(), headerTimer *time.Timer) (ae *attemptError, bridge bool) {
	h, acct := t.h, sel.Account
	body, err := t.upstreamBody(sel)
	if err != nil {
		headerTimer.Stop()
		return &attemptError{kind: failConn, account: acct.ID, err: err}, false
	}
	st, err := t.upstream.Open(uctx, acct, token, body)
	headerTimer.Stop()
	if err != nil {
		if errors.Is(err, ErrUseHTTP) {
			return nil, true
		}
		var ue *UpstreamError
		if errors.As(err, &ue) && ue.Status > 0 {
			t.reached = true
			return t.statusError(acct, ue.Status, ue.Header, ue.Body, []string{token}), false
		}
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: err})
		return &attemptError{kind: failConn, account: acct.ID, err: err}, false
	}
	defer st.Close()
	as := &answeredStream{EventStream: st, t: t}
	as.pending, _ = st.(interface{ Pending() bool })
	return t.relayEvents(sel, as, 0, nil, abort), false
}

// answeredStream marks the turn as reached at the upstream's first frame
// (or a refusal with a status), as response headers do over HTTP: a
// message the upstream never answered is not a usage record.
type answeredStream struct {
	EventStream
	t       *turn
	pending interface{ Pending() bool } // the stream, when it can tell
}

// Pending passes on the stream's own Pending, if it has one.
func (s *answeredStream) Pending() bool {
	return s.pending != nil && s.pending.Pending()
}

func (s *answeredStream) Next() ([]byte, error) {
	data, err := s.EventStream.Next()
	if !s.t.reached {
		var ue *UpstreamError
		if err == nil || errors.As(err, &ue) && ue.Status > 0 {
			s.t.reached = true
		}
	}
	return data, err
}

// statusError reports an upstream's error status to the scheduler and
// returns the attempt error that steers failover. The body is sanitized.
func (t *turn) statusError(acct *scheduler.Account, status int, header http.Header, raw []byte, secrets []string) *attemptError {
	body := sanitize(raw, secrets...)
	ae := &attemptError{kind: failStatus, account: acct.ID, status: status, header: header, body: body, secrets: secrets}
	kind := scheduler.OutcomeStatus
	if !ae.retryable() {
		kind = scheduler.OutcomeClientError
	}
	t.h.observe(acct.ID, scheduler.Outcome{Kind: kind, Status: status, Header: header, Body: body})
	return ae
}

func isEventStream(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// upstreamBody is the request body with the model rewritten for the
// account.
func (t *turn) upstreamBody(sel *scheduler.Selection) ([]byte, error) {
	body := t.req.Body
	if sel.UpstreamModel != "" && sel.UpstreamModel != t.req.Model {
		return sjson.SetBytes(body, "model", sel.UpstreamModel)
	}
	return body, nil
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
	body, err := t.upstreamBody(sel)
	if err != nil {
		return nil, err
	}
	if t.transport != "http" {
		if body, err = bridgeBody(body); err != nil {
			return nil, err
		}
	}
	url := trimSlash(sel.Account.BaseURL) + "/responses"
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	// The buffered body lets the transport retry a request on a reused
	// connection and never races the inbound body's close.
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	headers.Forward(r.Header, t.header, t.h.ForwardHeaders)
	// Shared, never modified value slices: two allocations less per attempt.
	r.Header["Content-Type"] = headerJSON
	if t.req.Stream {
		r.Header["Accept"] = headerEventStream
	}
	for k, vs := range sel.Account.Header {
		r.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if token != "" {
		r.Header["Authorization"] = t.h.bearer(token)
	}
	return r, nil
}

var (
	headerJSON        = []string{"application/json"}
	headerEventStream = []string{"text/event-stream"}
)

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// relayEvents pumps an upstream's events to the client. status and header
// are the upstream's HTTP answer, when there was one.
func (t *turn) relayEvents(sel *scheduler.Selection, src pump.Source, status int, header http.Header, abort func()) *attemptError {
	h, acct := t.h, sel.Account
	t.out.setUpstreamHeader(header)
	res := pump.Run(t.ctx, src, t.out, pump.Options{
		// Held even on the last attempt: a refusal then becomes the mapped
		// exhausted error (503, 429) rather than a 200 stream that failed.
		HoldBootstrap:  true,
		KeepAlive:      h.keepAlive(),
		IdleTimeout:    h.idleTimeout(),
		DrainTimeout:   h.drainTimeout(),
		Abort:          abort,
		RequestedModel: t.req.Model,
		UpstreamModel:  sel.UpstreamModel,
		Now:            h.Now,
		// Error and failed events pass through after output; they may
		// echo the credential.
		Sanitize:    func(b []byte) []byte { return sanitize(b, t.token) },
		FirstOutput: t.firstOutput(acct.ID),
		// Each bootstrap event echoes the request's instructions and tools:
		// room for two such echoes beyond the fixed bound.
		MaxHeldBytes: pump.DefaultMaxHeldBytes + 2*len(t.req.Body),
		// Bound before the client sees the turn end, so that a next turn
		// sent at once finds its account and its owner.
		BeforeTerminal: func(typ, id string) { t.bind(sel, typ, id) },
	})
	switch res.End {
	case pump.EndRefused:
		if res.Refusal != nil {
			refusal := sanitize(res.Refusal, t.token)
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeOverloaded, Status: status, Header: header, Body: refusal})
			return &attemptError{kind: failInBand, account: acct.ID, status: status, header: header, refusal: refusal}
		}
		var ue *UpstreamError
		if errors.As(res.Err, &ue) && ue.Status > 0 {
			// A refusal with a status in place of the first event (a
			// WebSocket upstream's error frame): the status rules apply.
			return t.statusError(acct, ue.Status, ue.Header, ue.Body, []string{t.token})
		}
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		return &attemptError{kind: failInBand, account: acct.ID, err: res.Err, idleAbort: res.IdleTimeout}
	case pump.EndBroken:
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		h.log.Warn("relay: upstream stream broke after output", "request_id", t.id, "account", acct.ID, "error", res.Err)
	default:
		if res.TerminalType != "" {
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess, TTFT: t.ttft(res.FirstOutput)})
		} else if res.Err != nil && !errors.Is(res.Err, context.Canceled) {
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: res.Err})
		}
	}
	if status == 0 {
		status = http.StatusOK
	}
	t.answered(status, "")
	recStatus := terminalStatus(res.TerminalType)
	switch {
	case res.End == pump.EndClientGone:
		recStatus = billing.StatusClientGone
	case res.End == pump.EndBroken:
		recStatus = billing.StatusUpstreamError
	}
	t.recordServed(sel, recStatus, res.Response, res.ResponseID, res.FirstOutput)
	return nil
}

func terminalStatus(typ string) string {
	switch typ {
	case event.TypeCompleted:
		return billing.StatusCompleted
	case event.TypeIncomplete:
		return billing.StatusIncomplete
	case event.TypeFailed:
		return billing.StatusFailed
	}
	return billing.StatusUpstreamError
}

// bind records stickiness once a response exists upstream.
func (t *turn) bind(sel *scheduler.Selection, terminal, responseID string) {
	if terminal != event.TypeCompleted && terminal != event.TypeIncomplete {
		return
	}
	err := t.hook(t.hooks.Detached(t.ctx), func(ctx context.Context) error {
		return t.h.Scheduler.Bind(ctx, t.sched, sel.Account.ID, responseID)
	})
	if err != nil {
		t.h.log.Warn("relay: sticky binding failed", "request_id", t.id, "account", sel.Account.ID, "error", err)
	}
}

func (t *turn) ttft(first time.Time) time.Duration {
	if first.IsZero() {
		return 0
	}
	return first.Sub(t.start)
}

// relayJSON relays a non-streaming answer.
func (t *turn) relayJSON(sel *scheduler.Selection, resp *http.Response, abort func()) *attemptError {
	h, acct := t.h, sel.Account
	// A body that stops arriving is an idle upstream, as in a stream: the
	// header timeout no longer applies once the headers are in.
	idle := &idleReader{r: resp.Body, d: h.idleTimeout(), timer: time.AfterFunc(h.idleTimeout(), abort)}
	// The answer is held whole, so it has the bound of one event.
	limit := h.maxEventBytes()
	body, err := io.ReadAll(io.LimitReader(idle, int64(limit)+1))
	idle.timer.Stop()
	if err == nil && len(body) > limit {
		body, err = nil, errJSONTooLarge
	}
	if err != nil {
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: err})
		return &attemptError{kind: failConn, account: acct.ID, err: err}
	}
	if !isJSONObject(body) {
		// An event stream or a proxy's page with a 2xx status is not an
		// answer the client can use, and must not reach it unread.
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: errNotJSON})
		return &attemptError{kind: failInBand, account: acct.ID, err: errNotJSON}
	}
	r := event.ParseBody(body)
	if r.Status == billing.StatusFailed {
		body = sanitize(body, t.token)
	}
	if r.Status == billing.StatusFailed && r.Usage.Output == 0 {
		// The JSON form of the in-band refusal: failed before any output.
		h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeOverloaded, Status: resp.StatusCode, Header: resp.Header, Body: body})
		return &attemptError{kind: failInBand, account: acct.ID, status: resp.StatusCode, header: resp.Header, refusal: body}
	}
	if sel.UpstreamModel != "" && sel.UpstreamModel != t.req.Model && r.Model == sel.UpstreamModel {
		if b, err := sjson.SetBytes(body, "model", t.req.Model); err == nil {
			body = b
		}
	}
	first := h.now()
	h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeSuccess})
	if t.observing() {
		t.observeFirst(acct.ID, first)
		t.answered(resp.StatusCode, "")
	}
	// Bound before the client has the answer, so that a next turn sent
	// at once finds its account and its owner.
	t.bind(sel, "response."+r.Status, r.ID)
	hdr := t.w.Header()
	headers.Return(hdr, resp.Header, h.ReturnHeaders)
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	hdr.Set("Content-Type", ct)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	// The deadline bounds the writes that reach the socket here (a body
	// larger than the server's buffer); the rest goes out when the handler
	// returns, after the usage record, as before.
	dl := writeDeadline{rc: http.NewResponseController(t.w), timeout: h.clientWriteTimeout()}
	dl.extend()
	t.w.WriteHeader(resp.StatusCode)
	_, werr := t.w.Write(body)
	dl.clear()
	status := r.Status
	switch status {
	case billing.StatusCompleted, billing.StatusIncomplete, billing.StatusFailed:
	default:
		status = billing.StatusCompleted
	}
	if werr != nil || t.ctx.Err() != nil {
		status = billing.StatusClientGone
	}
	t.recordServed(sel, status, r, r.ID, first)
	return nil
}

// idleReader re-arms timer for d after every read that returns data.
type idleReader struct {
	r     io.Reader
	d     time.Duration
	timer *time.Timer
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.timer.Reset(r.d)
	}
	return n, err
}

// sseSource adapts the SSE reader to pump.Source.
type sseSource struct{ r *sse.Reader }

// sseReaders recycles readers and their buffers across attempts.
var sseReaders = sync.Pool{New: func() any { return &sseSource{r: sse.NewReaderSize(nil, sseBufferSize)} }}

// sseBufferSize is the read buffer of one upstream stream: it holds a few
// typical events; a longer line is assembled in the reader's own buffer.
const sseBufferSize = 2 << 10

// maxPooledEvent: a reader that held an event larger than this is not
// kept, so one huge event does not pin its memory in the pool.
const maxPooledEvent = 1 << 20

func newSSESource(body io.Reader, maxEvent int) *sseSource {
	s := sseReaders.Get().(*sseSource)
	s.r.Reset(body)
	s.r.MaxEventBytes = maxEvent
	return s
}

func (s *sseSource) free() {
	if s.r.BufferedCap() > maxPooledEvent {
		return
	}
	s.r.Reset(nil)
	sseReaders.Put(s)
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

// Pending reports that a whole event is already buffered.
func (s *sseSource) Pending() bool { return s.r.Pending() }

func (s *sseSource) Next() ([]byte, error) {
	ev, err := s.r.Next()
	return ev.Data, err
}
