package relay

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/internal/knob"
)

// ServeHTTP serves the Responses API: POST …/responses, its WebSocket mode
// (a GET upgrade of the same path) when Handler.WebSocket is set, and the
// routes routes.go lists (…/responses/{id} and below, …/models).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	rt := routeOf(r.URL.Path)
	if rt.kind != routeCreate {
		h.serveRoute(w, r, rt)
		return
	}
	if r.Method == http.MethodGet {
		if h.WebSocket != nil && isUpgrade(r) {
			h.ws.serve(w, r)
			return
		}
		// A Responses WebSocket client falls back to HTTP on 426 only; any
		// other answer fails its turn.
		w.Header().Set("Upgrade", "websocket")
		msg := "WebSocket mode is not enabled on this endpoint; use POST /v1/responses"
		if h.WebSocket != nil {
			msg = "This endpoint serves the Responses WebSocket mode: send a WebSocket upgrade, or POST /v1/responses"
		}
		writeJSONError(w, &APIError{Status: http.StatusUpgradeRequired, Type: "invalid_request_error", Message: msg})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Message: "Method not allowed: use POST"})
		return
	}
	h.active.add()
	defer h.active.done()
	h.serveCreate(w, r, false)
}

// serveCreate serves a turn: POST …/responses, or (compact) POST
// …/responses/compact.
func (h *Handler) serveCreate(w http.ResponseWriter, r *http.Request, compact bool) {
	t := h.newTurn(r.Context(), turnInput{header: r.Header, userAgent: r.UserAgent(), clientIP: headers.ClientIP(r),
		transport: "http", compact: compact}, turnClient{w: w}, nil)
	w.Header().Set("X-Relay-Request-Id", t.in.id)
	defer t.finish()
	if t.observing() {
		r = r.WithContext(t.ctx)
	}
	req, lease := t.readRequest(w, r)
	defer lease.release()
	if req == nil {
		return
	}
	if compact {
		req.Stream = false // compaction v1 answers one JSON object
	}
	t.setRequest(req, "")
	if req.Stream {
		sw := newSSEWriter(w, h.ReturnHeaders, h.clientWriteTimeout(), h.warnNoFlush)
		defer sw.close()
		t.client.out = sw
	}
	t.serve()
}

// readRequest authenticates an HTTP turn, reads its body (charged to the
// body budget: the caller releases the lease) and validates it. nil: the
// client has been answered.
func (t *turn) readRequest(w http.ResponseWriter, r *http.Request) (*request, *bodyLease) {
	h := t.h
	subj, err := h.authenticate(r, &t.hooks)
	if err != nil {
		t.fail(authAnswer(err))
		return nil, nil
	}
	t.in.subj = subj
	body, lease, apiErr := h.readBody(w, r, subj.UserID)
	if apiErr != nil {
		t.fail(apiErr)
		return nil, nil
	}
	t.admit.body = lease
	req, invalid := parseRequest(body)
	if invalid != nil {
		t.fail(invalid)
		return nil, lease
	}
	return req, lease
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
