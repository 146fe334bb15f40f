package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/scheduler"
)

// turn is one HTTP request on its way through the relay.
type turn struct {
	h    *Handler
	ctx  context.Context // the client's
	subj *Subject
	req  *Request
	id   string
	// The client end: w for a JSON answer (HTTP, stream false), out for
	// events (SSE, or another transport's sink through ServeTurn).
	w         http.ResponseWriter
	out       eventSink
	header    http.Header // the client's request headers
	userAgent string
	clientIP  string
	transport string // "http" or "ws"
	turnNo    int
	userWait  concurrency.WaitOptions
	upstream  Upstream // for accounts with WebSocket set; nil: HTTP POST
	switches  int      // account switches allowed
	start     time.Time
	sched     scheduler.Request
	attempt   int
	// reached reports that some upstream answered (response headers, a
	// first frame, or a refusal with a status); only then is a usage
	// record written.
	reached bool
	token   string // the current attempt's upstream credential, for sanitizing
	// recorded guards the one usage record; usage is that record.
	recorded bool
	usage    billing.Usage
	obs      turnObs // what the Observer needs; unused without one
	hooks    hookcall.Runner
	// body is the body budget's lease (nil: none), released once the user
	// slot is taken or the turn ends.
	body *bodyLease
}

// ServeHTTP serves POST /v1/responses.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	if r.Method == http.MethodGet {
		// A Responses WebSocket client falls back to HTTP on 426 only; any
		// other answer fails its turn. WebSocket mode is served by wsproxy.
		w.Header().Set("Upgrade", "websocket")
		writeJSONError(w, &APIError{Status: http.StatusUpgradeRequired, Type: "invalid_request_error",
			Message: "WebSocket mode is not enabled on this endpoint; use POST /v1/responses"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Message: "Method not allowed: use POST"})
		return
	}
	h.active.add()
	defer h.active.done()
	t := &turn{h: h, w: w, ctx: r.Context(), id: newRequestID(), start: h.now(), header: r.Header,
		userAgent: r.UserAgent(), clientIP: headers.ClientIP(r), transport: "http", turnNo: 1, userWait: h.UserWait, switches: h.maxSwitches()}
	w.Header().Set("X-Relay-Request-Id", t.id)
	defer t.hooks.End()
	if h.Observer != nil {
		t.obs.obs = h.Observer
		t.observeStart()
		defer t.observeEnd()
		r = r.WithContext(t.ctx)
	}

	subj, err := h.authenticate(r, &t.hooks)
	if err != nil {
		t.fail(authAnswer(err))
		return
	}
	t.subj = subj
	body, lease, apiErr := h.readBody(w, r, subj.UserID)
	if apiErr != nil {
		t.fail(apiErr)
		return
	}
	t.body = lease
	defer lease.release()
	req, invalid := parseRequest(body)
	if invalid != nil {
		t.fail(invalid)
		return
	}
	t.req = req
	if req.Stream {
		sw := newSSEWriter(w, h.ReturnHeaders, h.clientWriteTimeout(), h.warnNoFlush)
		defer sw.close()
		t.out = sw
	}
	t.sched = scheduler.Request{
		Group:              subj.GroupID,
		Model:              req.Model,
		APIKeyID:           subj.APIKeyID,
		PreviousResponseID: req.PreviousResponseID,
		SessionKey:         sessionKey(r.Header, req),
		Wait:               true,
	}
	t.serve()
}

// Subject authenticates r as ServeHTTP does (Authenticate, or the subject
// stored by WithSubject). When it does not return a subject its error holds
// the answer for the client, an *APIError found with errors.As: the one
// Authenticate returned, 503 when Authenticate did not answer in time (the
// error then also wraps ErrHookTimeout), else 401.
func (h *Handler) Subject(r *http.Request) (*Subject, error) {
	h.init()
	return h.authenticate(r, nil)
}

var errInvalidAPIKey = &APIError{Status: http.StatusUnauthorized, Type: "authentication_error", Message: "Invalid API key", Code: "invalid_api_key"}

// authAnswer is the client's answer for an error of authenticate.
func authAnswer(err error) *APIError {
	if ae, ok := errors.AsType[*APIError](err); ok {
		return ae
	}
	return errInvalidAPIKey
}

// authenticate runs Authenticate bounded, on the turn's runner when there
// is one. Its error always carries an *APIError (see Subject).
func (h *Handler) authenticate(r *http.Request, hooks *hookcall.Runner) (*Subject, error) {
	if h.Authenticate == nil {
		if s, _ := SubjectFrom(r.Context()); s != nil {
			return s, nil
		}
		return nil, errInvalidAPIKey
	}
	var s *Subject
	var err error
	if hooks != nil {
		err = hooks.Call(r.Context(), h.hookTimeout(), func(context.Context) error {
			var err error
			s, err = h.Authenticate(r)
			return err
		}, nil, nil, 0)
	} else {
		// Outside a turn: the hook's context carries the bound.
		err = hookcall.Bounded(r.Context(), h.hookTimeout(), func(ctx context.Context) error {
			var err error
			s, err = h.Authenticate(r.WithContext(ctx))
			return err
		}, nil)
	}
	err = hookErr(err)
	p, isPanic := errors.AsType[*hookcall.PanicError](err)
	switch {
	case isPanic:
		h.log.Error("relay: Authenticate panicked", "panic", fmt.Sprint(p.Value))
		return nil, errInvalidAPIKey
	case errors.Is(err, ErrHookTimeout):
		h.log.Error("relay: Authenticate did not return in time; answering 503", "timeout", h.hookTimeout())
		return nil, fmt.Errorf("relay: Authenticate: %w: %w", &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Authentication service unavailable, please retry later", RetryAfter: time.Second}, err)
	case r.Context().Err() != nil:
		return nil, fmt.Errorf("%w: %w", errInvalidAPIKey, r.Context().Err())
	case err != nil:
		if _, ok := errors.AsType[*APIError](err); !ok {
			// Debug: refusing strangers' keys is routine; a host that
			// wants outages seen returns an *APIError (503) and logs.
			h.log.Debug("relay: Authenticate refused the request", "error", err)
			return nil, fmt.Errorf("%w: %w", errInvalidAPIKey, err)
		}
		return nil, err
	case s == nil:
		return nil, errInvalidAPIKey
	}
	return s, nil
}

// warnNoFlush logs, once per Handler, that a ResponseWriter could not
// flush: a middleware wraps it without Flush or Unwrap, so streams reach
// clients in bursts instead of event by event.
func (h *Handler) warnNoFlush() {
	if h.noFlushLogged.CompareAndSwap(false, true) {
		h.log.Warn("relay: the ResponseWriter cannot flush (a middleware wraps it without Flush or Unwrap); " +
			"streams are relayed but reach clients only as buffers fill. Give the wrapper an Unwrap method returning the wrapped ResponseWriter.")
	}
}

// sessionKey is the client's session identity for sticky routing: header
// session_id, then conversation_id, then the body's prompt_cache_key.
func sessionKey(h http.Header, req *Request) string {
	if v := headerValue(h, "session_id", "Session-Id"); v != "" {
		return v
	}
	if v := headerValue(h, "conversation_id", "Conversation-Id"); v != "" {
		return v
	}
	return req.PromptCacheKey
}

// readBody reads at most MaxBodyBytes, whatever Content-Length claims,
// under a reservation of the body budget taken before the first byte (see
// bodyBudget). On success the caller owns the lease.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, user string) (_ []byte, lease *bodyLease, apiErr error) {
	limit := h.maxBody()
	tooLarge := &APIError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
		Message: fmt.Sprintf("Request body too large: the limit is %d bytes", limit)}
	if r.ContentLength > limit {
		return nil, nil, tooLarge
	}
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	plain := enc == "" || enc == "identity"
	need := r.ContentLength
	if need < 0 {
		need = limit
	}
	if !plain {
		need += limit // the decoded copy
	}
	lease, err := h.bodies.reserve(r.Context(), user, need, h.bodyWait())
	if err != nil {
		return nil, nil, bodyBudgetAnswer(err)
	}
	defer func() {
		if apiErr != nil {
			lease.release()
			lease = nil
		}
	}()
	size := r.ContentLength
	if size < 0 || size > 1<<20 {
		size = 512
	}
	// ReadFrom wants bytes.MinRead free before each read: with less it
	// grows the buffer, a second allocation for every body.
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err = buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, tooLarge
		}
		return nil, nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "Failed to read request body"}
	}
	body := buf.Bytes()
	if plain {
		lease.shrink(int64(len(body)))
		return body, lease, nil
	}
	decode := h.DecodeBody[enc]
	if decode == nil && enc == "gzip" {
		decode = func(b []byte) ([]byte, error) {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(io.LimitReader(zr, limit+1))
		}
	}
	if decode == nil {
		return nil, nil, &APIError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error",
			Message: "Unsupported Content-Encoding " + enc}
	}
	out, err := decode(body)
	if err != nil {
		return nil, nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "Failed to decode request body (" + enc + ")"}
	}
	if int64(len(out)) > limit {
		return nil, nil, tooLarge
	}
	lease.shrink(int64(len(out)))
	return out, lease, nil
}

// bodyWait bounds the wait for body budget as UserWait bounds the wait for
// a user slot: 0 means that default, negative only the client's context.
func (h *Handler) bodyWait() time.Duration {
	return max(knob.Or(h.UserWait.Timeout, defaultUserWaitTimeout), 0)
}

// serve runs admission and the failover loop.
func (t *turn) serve() {
	h := t.h
	release, apiErr := t.acquireUserSlot()
	if apiErr != nil {
		t.fail(apiErr)
		return
	}
	defer release()
	if t.subj.Concurrency > 0 {
		// From here the user's limit bounds the bodies it holds.
		t.body.release()
	}
	if apiErr := t.checkBilling(); apiErr != nil {
		t.fail(apiErr)
		return
	}

	switches := t.switches
	var last *attemptError
	for {
		sel, err := t.selectAccount()
		if err != nil {
			if t.ctx.Err() != nil {
				t.finishClientGone(nil)
				return
			}
			if last != nil {
				// Every remaining account is excluded or busy: the client
				// learns what the last upstream said, mapped.
				t.fail(h.clientError(last, true))
				t.recordFailure(last)
				return
			}
			t.fail(h.selectError(err, t))
			return
		}
		canSwitch := len(t.sched.Exclude) < switches
		began := h.now()
		ae := t.tryOn(sel)
		if ae == nil {
			if t.observing() {
				t.observeAttempt(sel, began, nil, servedOutcome(t.usage.Status))
			}
			return // served and recorded
		}
		last = ae
		if t.ctx.Err() != nil {
			if t.observing() {
				t.observeAttempt(sel, began, ae, AttemptClientGone)
			}
			t.finishClientGone(ae)
			return
		}
		if !ae.retryable() || !canSwitch {
			if t.observing() {
				t.observeAttempt(sel, began, ae, AttemptFailed)
			}
			t.fail(h.clientError(ae, ae.retryable()))
			t.recordFailure(ae)
			return
		}
		if t.observing() {
			// Reported by the next selection: "failover" if it finds an
			// account, "failed" if this error goes to the client.
			t.pendAttempt(sel, began, ae)
		}
		h.log.Info("relay: failing over", "request_id", t.id, "account", sel.Account.ID, "reason", ae.Error())
		t.sched.Exclude = append(t.sched.Exclude, sel.Account.ID)
	}
}

// tryOn runs one attempt and gives the account slot back, even when the
// attempt panics.
func (t *turn) tryOn(sel *scheduler.Selection) *attemptError {
	defer sel.Release()
	return t.try(sel)
}

// fail answers err through the client end: a JSON error, an SSE error
// event once the stream is committed, or the other transport's error. A
// client that left is told nothing.
func (t *turn) fail(err error) {
	if errors.Is(err, errClientGone) {
		t.answered(statusClientGone, "client_gone")
		return
	}
	e := answerFor(err)
	t.answered(e.Status, e.Type)
	if t.out != nil {
		t.out.fail(e)
		return
	}
	writeJSONError(t.w, e)
}

func (t *turn) finishClientGone(ae *attemptError) {
	if t.reached {
		t.record(billing.StatusClientGone, nil)
	}
}

func (t *turn) recordFailure(ae *attemptError) {
	if t.reached {
		t.record(billing.StatusUpstreamError, nil)
	}
}
