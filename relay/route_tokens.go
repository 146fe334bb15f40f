package relay

import (
	"errors"
	"github.com/relaykit/responsesrelay/billing"
	"net/http"
	"strconv"

	"github.com/relaykit/responsesrelay/internal/headers"
	"github.com/relaykit/responsesrelay/scheduler"
)

// serveInputTokens answers POST …/responses/input_tokens: a body validated
// like a turn's, counted by an account that serves its model. It costs
// nothing upstream, so it writes no usage record; it takes a user slot
// but does not wait for an account's: a busy group is 429.
func (h *Handler) serveInputTokens(w http.ResponseWriter, r *http.Request) {
	t := h.newTurn(r.Context(), turnInput{header: r.Header, userAgent: r.UserAgent(), clientIP: headers.ClientIP(r),
		transport: "http"}, turnClient{w: w}, nil)
	w.Header().Set("X-Relay-Request-Id", t.in.id)
	t.rec.done = true // no usage record for a count
	defer t.finish()
	req, lease := t.readRequest(w, r)
	defer lease.release()
	if req == nil {
		return
	}
	body := req.Body
	req.Stream = false
	t.setRequest(req, "")
	t.route.sched.Wait = false
	release, slotErr := t.acquireUserSlot()
	if slotErr != nil {
		t.fail(slotErr)
		return
	}
	defer release()
	sel, err := t.selectAccount()
	if err != nil {
		t.fail(h.selectError(err, t))
		return
	}
	defer sel.Release()
	resp, token, callErr := h.callAccount(t.ctx, sel.Account, http.MethodPost, "/responses/input_tokens", "", body, r.Header, h.jsonHeaderTimeout())
	if callErr != nil {
		t.fail(callErr)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		t.fail(h.upstreamAnswer(sel.Account, resp, token))
		return
	}
	out, err := readLimited(resp.Body, resp.ContentLength, h.maxEventBytes())
	if err != nil || !validJSON(out) {
		if err == nil {
			err = errors.New("not JSON")
		}
		h.observe(sel.Account.ID, scheduler.Outcome{Kind: scheduler.OutcomeStreamError, Err: err})
		t.fail(&APIError{Status: http.StatusBadGateway, Type: "upstream_error", Message: "Upstream request failed"})
		return
	}
	headers.Return(w.Header(), resp.Header, h.ReturnHeaders)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	t.answered(resp.StatusCode, "")
	// What the Observer is told; no usage record is written for a count.
	t.rec.usage = t.baseUsage()
	t.rec.usage.AccountID, t.rec.usage.Status = sel.Account.ID, billing.StatusCompleted
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}
