package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/scheduler"
)

// turnAdmit is what admission works with: userWait bounds the wait for the
// user slot (set at entry); body is the body budget's lease (nil: none),
// set by ServeHTTP once the body is read and given back by
// acquireUserSlot once the user slot covers the body, or by ServeHTTP when
// the turn ends.
type turnAdmit struct {
	userWait concurrency.WaitOptions
	body     *bodyLease
	// batch is what was taken with the user slot in one step (batch.go);
	// nil when none. Its account is for the first selection (taken set
	// once it was used or given back).
	batch *scheduler.Claimed
	taken bool
}

// wait runs a blocking admission step on the turn's hook runner: bounded
// by the client's context and timeout, abandoned (late undoing what it
// took) if it ignores them. For a streaming request it writes ": ping" every
// KeepAlive meanwhile; the first ping commits the response as a 200 event
// stream.
func (t *turn) wait(timeout time.Duration, fn func(ctx context.Context) error, late func(error)) error {
	var ping func()
	if t.client.out != nil {
		ping = func() { t.client.out.Ping() } // a dead client shows up as ctx done
	}
	return hookErr(t.hooks.Call(t.ctx, timeout, fn, late, ping, t.h.keepAlive()))
}

// acquireUserSlot takes the user's concurrency slot, waiting in a bounded
// queue; with the slot, the user's limit bounds the bodies it holds, so
// the body lease goes back. The release func runs on a detached context:
// it must run even when the client has gone.
func (t *turn) acquireUserSlot() (func(), error) {
	limit := t.in.subj.Concurrency
	if t.h.batchSlots {
		if release := t.claimSlots(limit); release != nil {
			return release, nil
		}
	}
	if limit <= 0 {
		return func() {}, nil
	}
	o := t.admit.userWait
	if o.MaxWaiters == 0 {
		o.MaxWaiters = limit + defaultUserWaitExtra
	}
	if o.Timeout == 0 {
		o.Timeout = defaultUserWaitTimeout
	}
	var release func()
	timeout := time.Duration(0)
	if o.Timeout > 0 {
		timeout = o.Timeout + t.h.hookTimeout()
	}
	began := t.h.now()
	acquire := func(ctx context.Context) error {
		var err error
		release, err = concurrency.Acquire(ctx, t.h.userLimiter, userKey(t.in.subj.UserID), limit, o)
		return err
	}
	err := t.waitOn(t.h.userInProcess, timeout, acquire, func(error) {
		if release != nil {
			release()
		}
	})
	if t.observing() {
		t.observeSlot(SlotUser, began, t.waitOutcome(err))
	}
	switch {
	case err == nil:
		// From here the user's limit bounds the bodies it holds.
		t.admit.body.release()
		return release, nil
	case errors.Is(err, concurrency.ErrQueueFull):
		return nil, &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
			Message: "Too many pending requests, please retry later", RetryAfter: time.Second}
	case errors.Is(err, concurrency.ErrWaitTimeout):
		return nil, &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
			Message: "Timed out waiting for a concurrency slot, please retry later", RetryAfter: 5 * time.Second}
	case t.ctx.Err() != nil:
		return nil, errClientGone
	}
	t.h.log.Error("relay: user slot limiter failed", "request_id", t.in.id, "error", err)
	return nil, &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "Concurrency backend unavailable, please retry later"}
}

// waitOutcome names how a wait for a slot ended, for SlotWait.Outcome.
func (t *turn) waitOutcome(err error) WaitOutcome {
	var na *scheduler.NoAccountError
	switch {
	case err == nil:
		return WaitAcquired
	case errors.Is(err, concurrency.ErrQueueFull), errors.Is(err, scheduler.ErrAccountsBusy):
		return WaitQueueFull
	case errors.Is(err, concurrency.ErrWaitTimeout):
		return WaitTimeout
	case t.ctx.Err() != nil:
		return WaitClientGone
	case errors.As(err, &na):
		return WaitNoAccount
	case errors.Is(err, scheduler.ErrResponseNotOwned):
		return WaitNotOwned
	}
	return WaitError
}

// errClientGone is answered (to nobody) when the client left during
// admission.
var errClientGone = errors.New("relay: the client closed the request")

// statusClientGone is the status a turn whose client left is observed
// with (the client itself is told nothing).
const statusClientGone = 499

// checkBilling asks the Gate. A *billing.Denial is shown as the host wrote
// it; any other error fails closed with 503.
func (t *turn) checkBilling() error {
	if t.h.Billing == nil {
		return nil
	}
	q := billing.Request{UserID: t.in.subj.UserID, APIKeyID: t.in.subj.APIKeyID, GroupID: t.in.subj.GroupID,
		Model: t.in.req.Model, Stream: t.in.req.Stream, Transport: t.in.transport, Meta: t.in.subj.Meta}
	err := t.hook(t.ctx, func(ctx context.Context) error { return t.h.Billing.Check(ctx, q) })
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*billing.Denial](err); ok {
		return err // answered as the host wrote it
	}
	if t.ctx.Err() != nil {
		return errClientGone
	}
	t.h.log.Error("relay: billing gate failed; refusing the request", "request_id", t.in.id, "user", t.in.subj.UserID, "error", err)
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "Billing service unavailable, please retry later"}
}

func roundUp(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Second - 1) / time.Second * time.Second
}

// selectAccount asks the scheduler, waiting with pings when every candidate
// is full.
func (t *turn) selectAccount() (*scheduler.Selection, error) {
	if sel := t.takeClaimed(); sel != nil {
		return sel, nil
	}
	var sel *scheduler.Selection
	began := t.h.now()
	selectFn := func(ctx context.Context) error {
		var err error
		sel, err = t.h.Scheduler.Select(ctx, t.route.sched)
		return err
	}
	err := t.waitOn(t.h.schedInProcess, t.h.selectTimeout(), selectFn, func(error) {
		if sel != nil {
			sel.Release()
		}
	})
	if err != nil {
		// sel is not read: an abandoned Select may still be writing it.
		if t.observing() {
			t.flushAttempt(AttemptFailed)
			t.observeSlot(SlotAccount, began, t.waitOutcome(err))
		}
		return nil, err
	}
	if t.observing() {
		t.flushAttempt(AttemptFailover)
		t.observeSlot(SlotAccount, began, WaitAcquired)
	}
	return sel, nil
}

// selectTimeout bounds Scheduler.Select: its own wait for an account slot
// plus HookTimeout for the Pool and Store calls around it. 0: only the
// client's context bounds it (the scheduler waits without a timeout).
func (h *Handler) selectTimeout() time.Duration {
	wait := max(knob.Or(h.Scheduler.AccountWait.Timeout, 30*time.Second), 0) // the scheduler's default
	if wait == 0 {
		return 0
	}
	return wait + h.hookTimeout()
}

// selectError maps a scheduler failure (with no upstream error to report).
func (h *Handler) selectError(err error, t *turn) *APIError {
	var na *scheduler.NoAccountError
	if errors.As(err, &na) {
		h.log.Warn("relay: no available accounts", "request_id", t.in.id, "group", t.in.subj.GroupID, "model", t.in.req.Model, "reason", na.Reason, "detail", na.Error())
		e := &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "No available accounts"}
		switch na.Reason {
		case scheduler.ReasonModel:
			e.Message = fmt.Sprintf("No available accounts: model %s is not served", t.in.req.Model)
		case scheduler.ReasonCoolingDown:
			e.Message = "No available accounts: all accounts are temporarily rate limited, please retry later"
			if wait := na.Until.Sub(h.now()); wait > 0 {
				e.RetryAfter = roundUp(wait)
			}
		case scheduler.ReasonRequired:
			// A compaction item decrypts only on the account that made it:
			// no other account may take the turn.
			e.Message = "No available accounts: the account that holds this conversation's compacted history cannot serve it now, please retry later"
			if wait := na.Until.Sub(h.now()); wait > 0 {
				e.Status, e.Type = http.StatusTooManyRequests, "rate_limit_error"
				e.RetryAfter = roundUp(wait)
			}
		}
		return e
	}
	switch {
	case errors.Is(err, scheduler.ErrResponseNotOwned):
		// Another key's response: answered as the upstream answers an
		// unknown one, so that the answer tells nothing about it.
		h.log.Info("relay: previous response of another API key refused", "request_id", t.in.id, "api_key_id", t.in.subj.APIKeyID)
		return errPreviousNotFound(t.in.req.PreviousResponseID)
	case errors.Is(err, concurrency.ErrQueueFull), errors.Is(err, scheduler.ErrAccountsBusy):
		return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
			Message: "All upstream accounts are busy, please retry later", RetryAfter: time.Second}
	case errors.Is(err, concurrency.ErrWaitTimeout):
		return &APIError{Status: http.StatusTooManyRequests, Type: "rate_limit_error",
			Message: "Timed out waiting for an upstream account, please retry later", RetryAfter: 5 * time.Second}
	case errors.Is(err, scheduler.ErrLimiter):
		h.log.Error("relay: account limiter failed", "request_id", t.in.id, "error", err)
		return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: "Concurrency backend unavailable, please retry later", RetryAfter: time.Second}
	}
	h.log.Error("relay: account selection failed", "request_id", t.in.id, "error", err)
	return &APIError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "No available accounts"}
}

// errPreviousNotFound is the upstream's answer to an unknown
// previous_response_id, byte for byte.
func errPreviousNotFound(id string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: "previous_response_id",
		Code: "previous_response_not_found", Message: "Previous response with id '" + id + "' not found."}
}
