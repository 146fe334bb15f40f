package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// errResponseNotFound is the upstream's answer to a response id it does
// not hold, byte for byte: what another key, or an id the relay never
// saw, is told, without asking any upstream.
func errResponseNotFound(id string) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error",
		Message: "Response with id '" + id + "' not found."}
}

// serveStored serves a call on a stored response (retrieve, delete, its
// input items, cancel). Only the account that holds it can answer, and
// only the API key that created it may ask: any other key, and an id the
// relay holds no binding for, get the upstream's 404 with no upstream
// call.
func (h *Handler) serveStored(w http.ResponseWriter, r *http.Request, rt route) {
	subj, err := h.authenticate(r, nil)
	if err != nil {
		writeJSONError(w, authAnswer(err))
		return
	}
	acct, err := h.holder(r.Context(), subj, rt.id)
	if err != nil {
		writeJSONError(w, h.holderError(err, rt.id))
		return
	}
	suffix := ""
	switch rt.kind {
	case routeInputItems:
		suffix = "/input_items"
	case routeCancel:
		suffix = "/cancel"
	}
	query := ""
	stream := false
	if r.Method == http.MethodGet {
		query = r.URL.RawQuery
		stream = rt.kind == routeResponse && (r.URL.Query().Get("stream") == "true" || streamInBody(r))
		if stream && r.URL.Query().Get("stream") != "true" {
			// The upstream reads stream from the query.
			query = appendQuery(query, "stream=true")
		}
	}
	timeout := h.jsonHeaderTimeout()
	if stream {
		timeout = h.idleTimeout()
	}
	resp, token, apiErr := h.callAccount(r.Context(), acct, r.Method, "/responses/"+url.PathEscape(rt.id)+suffix, query, nil, r.Header, timeout)
	if apiErr != nil {
		writeJSONError(w, apiErr)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		writeJSONError(w, h.upstreamAnswer(acct, resp, token))
		return
	}
	if stream && isEventStream(resp.Header.Get("Content-Type")) {
		h.relayStoredStream(w, r, acct, resp, token, subj, rt.id)
		return
	}
	body, err := readLimited(resp.Body, resp.ContentLength, h.maxEventBytes())
	if err != nil || !validJSON(body) {
		writeJSONError(w, &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"})
		return
	}
	body = sanitize(body, token)
	switch {
	case r.Method == http.MethodDelete:
		// The relay's own record of the response goes with it.
		if err := h.deleteRecord(r.Context(), subj.APIKeyID, rt.id); err != nil {
			h.log.Warn("relay: deleting a conversation record failed", "response_id", rt.id, "error", err)
		}
	case rt.kind == routeResponse || rt.kind == routeCancel:
		// A background response seen in a terminal state is billed now,
		// once.
		h.bg.seen(h, rt.id, body)
	}
	headers.Return(w.Header(), resp.Header, h.ReturnHeaders)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// holder is the account that holds id for subj.
func (h *Handler) holder(ctx context.Context, subj *Subject, id string) (*scheduler.Account, error) {
	var acct *scheduler.Account
	err := h.bounded(ctx, func(ctx context.Context) error {
		var err error
		acct, err = h.Scheduler.Holder(ctx, subj.GroupID, subj.APIKeyID, id)
		return err
	})
	return acct, err
}

// holderError answers a failed holder lookup: the upstream's 404 for an id
// that is not the caller's to reach, 503 when the lookup itself failed.
func (h *Handler) holderError(err error, id string) *APIError {
	if errors.Is(err, scheduler.ErrResponseNotOwned) || errors.Is(err, scheduler.ErrUnknownResponse) {
		return errResponseNotFound(id)
	}
	h.log.Error("relay: looking up the account of a response failed", "response_id", id, "error", err)
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
		Message: "Could not look up the response, please retry later", RetryAfter: time.Second}
}

// deleteRecord removes the relay's record of a response.
func (h *Handler) deleteRecord(ctx context.Context, apiKeyID, id string) error {
	return h.bounded(context.WithoutCancel(ctx), func(ctx context.Context) error {
		return h.convStore.Delete(ctx, apiKeyID, id)
	})
}

// callAccount sends one request to acct outside a turn (path after the
// account's BaseURL, with the same header policy and credentials as a
// turn) and waits at most timeout for its response headers; a 401 whose
// token the Credentials renew is sent once more with the new one, as in
// a turn (credentials_refresh.go). The caller closes the body. A failure
// before an answer is the client's APIError.
func (h *Handler) callAccount(ctx context.Context, acct *scheduler.Account, method, path, query string, body []byte, in http.Header, timeout time.Duration) (*http.Response, string, *APIError) {
	token, err := h.token(ctx, acct, h.bounded)
	if err != nil {
		h.log.Error("relay: no credentials for account", "account", acct.ID, "error", err)
		return nil, "", &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"}
	}
	resp, apiErr := h.sendAccount(ctx, acct, method, path, query, body, in, token, timeout)
	if apiErr == nil && resp.StatusCode == http.StatusUnauthorized {
		if renewed, ok := h.renewCall(ctx, acct, token, resp); ok {
			resp.Body.Close()
			token = renewed
			resp, apiErr = h.sendAccount(ctx, acct, method, path, query, body, in, token, timeout)
		}
	}
	if apiErr != nil {
		return nil, "", apiErr
	}
	return resp, token, nil
}

// sendAccount is one request of callAccount.
func (h *Handler) sendAccount(ctx context.Context, acct *scheduler.Account, method, path, query string, body []byte, in http.Header, token string, timeout time.Duration) (*http.Response, *APIError) {
	// The call outlives neither the client nor its header timeout; the
	// body is read under the client's context.
	req, err := h.accountRequest(ctx, acct, method, path, query, body, in, token)
	if err != nil {
		return nil, &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "Invalid request"}
	}
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(timeout, cancel)
	resp, err := h.transport.RoundTrip(req.WithContext(cctx))
	if !timer.Stop() && err == nil {
		// The headers came as the timer fired: too late.
		resp.Body.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		if ctx.Err() == nil {
			h.observe(acct.ID, scheduler.Outcome{Kind: scheduler.OutcomeConnError, Err: err})
			h.log.Warn("relay: upstream call failed", "account", acct.ID, "path", path, "error", err)
		}
		return nil, &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"}
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody ends the call's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// upstreamAnswer is what the client is told about an upstream's error
// status outside a turn: as in a turn (MapError), sanitized.
func (h *Handler) upstreamAnswer(acct *scheduler.Account, resp *http.Response, token string) *APIError {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	ae := &attemptError{kind: failStatus, account: acct.ID, status: resp.StatusCode, header: resp.Header,
		body: sanitize(raw, token), secrets: []string{token}}
	return h.clientError(ae, false)
}

// maxGetBody bounds the body of a GET the relay reads: the official SDKs
// send {"stream": true} in the body of a streaming retrieve.
const maxGetBody = 4 << 10

// streamInBody reports a GET whose JSON body asks for a stream.
func streamInBody(r *http.Request) bool {
	if r.Body == nil || r.ContentLength == 0 {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxGetBody+1))
	if err != nil || len(b) > maxGetBody || !validJSON(b) {
		return false
	}
	return gjson.GetBytes(b, "stream").Type == gjson.True
}

func appendQuery(q, kv string) string {
	if q == "" {
		return kv
	}
	return q + "&" + kv
}
