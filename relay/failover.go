package relay

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// turnRoute is where the turn may go: the scheduler request (built at
// entry by setRequest; serve adds each failed account to Exclude) and how
// many account switches are left to it.
type turnRoute struct {
	sched    scheduler.Request
	switches int // account switches allowed (0: none)
}

// setRequest records the validated request and the scheduler request it
// makes; prefer is an account to try first (serveMessage's PreferAccount).
func (t *turn) setRequest(req *request, prefer string) {
	t.in.req = req
	t.route.sched = scheduler.Request{
		Group:              t.in.subj.GroupID,
		Model:              req.Model,
		APIKeyID:           t.in.subj.APIKeyID,
		PreviousResponseID: req.PreviousResponseID,
		SessionKey:         sessionKey(t.in.header, req),
		PreferAccount:      prefer,
		Wait:               true,
	}
}

// sessionKey is the client's session identity for sticky routing: the
// body's conversation (a Conversations API object lives on the account
// that made it, as a previous response does), then header session_id,
// then conversation_id, then the body's prompt_cache_key.
func sessionKey(h http.Header, req *request) string {
	if req.conversation != "" {
		return "conversation:" + req.conversation
	}
	if v := headerValue(h, "session_id", "Session-Id"); v != "" {
		return v
	}
	if v := headerValue(h, "conversation_id", "Conversation-Id"); v != "" {
		return v
	}
	return req.promptCacheKey
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
	if apiErr := t.checkBilling(); apiErr != nil {
		t.fail(apiErr)
		return
	}
	if apiErr := t.checkPrice(); apiErr != nil {
		t.fail(apiErr)
		return
	}
	if apiErr := t.hold(); apiErr != nil {
		t.fail(apiErr)
		return
	}
	defer t.endHold()
	t.loadPrevious()
	t.requireCompactionMaker()
	if t.in.transport != "http" && t.in.req.noStore && t.in.req.PreviousResponseID != "" && t.conv.prev == nil {
		// A store=false continuation the relay holds no record of: only
		// the upstream socket that made the previous response knows it.
		t.route.switches = 0
	}

	switches := t.route.switches
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
		canSwitch := len(t.route.sched.Exclude) < switches
		began := h.now()
		ae := t.tryOn(sel, &began)
		if ae == nil {
			if t.observing() {
				t.observeAttempt(sel, began, nil, servedOutcome(t.rec.usage.Status))
			}
			return // served and recorded
		}
		last = ae
		if t.ctx.Err() == nil && (t.retrySameAccount(ae) || t.retryCompactByTrigger(ae)) {
			// The relay fixes the body itself: the same account again,
			// neither excluded nor counted as a switch.
			if t.observing() {
				t.pendAttempt(sel, began, ae)
			}
			h.log.Info("relay: retrying on the same account", "request_id", t.in.id, "account", sel.Account.ID, "reason", ae.Error())
			t.route.sched.PreferAccount = sel.Account.ID
			continue
		}
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
		h.log.Info("relay: failing over", "request_id", t.in.id, "account", sel.Account.ID, "reason", ae.Error())
		t.route.sched.Exclude = append(t.route.sched.Exclude, sel.Account.ID)
	}
}

// tryOn runs one attempt (two when the upstream rejected a token the
// Credentials renewed: tryRenewing, which moves began to the second) and
// gives the account slot back, even when the attempt panics.
func (t *turn) tryOn(sel *scheduler.Selection, began *time.Time) (ae *attemptError) {
	if t.claimed(sel) == nil {
		defer sel.Release()
	} else {
		// Taken with the user slot (batch.go): a served turn gives both
		// back in one step at its end; a failed attempt frees the account
		// now, before another selection.
		defer func() {
			if ae != nil {
				sel.Release()
			}
		}()
	}
	return t.tryRenewing(sel, began)
}

// attemptKind says how an upstream attempt failed.
type attemptKind int

const (
	failConn        attemptKind = iota // no response headers (dial, reset, header timeout)
	failStatus                         // an HTTP error status
	failInBand                         // a 200 stream refused before output, or ended before any event
	failCredentials                    // no token for the account
	failAccount                        // the account's own configuration cannot serve (BodyPatch)
	failRequest                        // the body for the account could not be built: answer is the client's
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
	answer    *APIError // failRequest: what the client is told
	renew     bool      // a 401 held back for a renewal of the token (credentials_refresh.go)
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
	case failAccount:
		return fmt.Sprintf("account: %v", e.err)
	case failRequest:
		return "request: " + e.answer.Message
	}
	return fmt.Sprintf("connection: %v", e.err)
}

// retryable is the failover predicate (ARCHITECTURE.md, "Failover predicate"): connection errors,
// 401/402/403/408/429/529/5xx, and in-band refusals move to another account;
// other 4xx are the request's fault and go back to the client.
func (e *attemptError) retryable() bool {
	switch e.kind {
	case failConn, failInBand, failCredentials, failAccount:
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

// bind records stickiness once a response exists upstream.
func (t *turn) bind(sel *scheduler.Selection, terminal, responseID string) {
	if terminal != event.TypeCompleted && terminal != event.TypeIncomplete && !t.in.req.background {
		return
	}
	err := t.hookOn(t.h.schedInProcess, t.hooks.Detached(t.ctx), t.bindCall(sel, responseID))
	t.bindFailed(sel, err)
}

// bindCall is the Scheduler call that binds responseID (and the session)
// to sel's account; it reads only what it is given and the turn's claim,
// so it may run on another goroutine (bind_early.go).
func (t *turn) bindCall(sel *scheduler.Selection, responseID string) func(context.Context) error {
	q, c, id, s := t.route.sched, t.claimed(sel), sel.Account.ID, t.h.Scheduler
	return func(ctx context.Context) error {
		if c != nil { // written with the slots' release (batch.go)
			return c.BindOnRelease(ctx, q, responseID)
		}
		return s.Bind(ctx, q, id, responseID)
	}
}

// bindFailed logs a binding that failed (err not nil).
func (t *turn) bindFailed(sel *scheduler.Selection, err error) {
	if err != nil {
		t.h.log.Warn("relay: sticky binding failed", "request_id", t.in.id, "account", sel.Account.ID, "error", err)
	}
}
