package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Observer receives the life of every turn, for metrics and traces. Every
// field may be nil; a nil Handler.Observer costs one nil check per turn
// stage. The arguments are plain structs: adapters for a metrics or tracing
// library live outside this module.
//
// The calls are synchronous, on the goroutine serving the turn (the
// ServeHTTP goroutine, or a WebSocket connection's), in this order:
// TurnStart once, as the turn arrives; SlotWait for the user slot (when
// the subject has a limit) and for each account selection; Attempt once
// per upstream attempt, when it has ended (one the turn moves on from is
// reported just before the SlotWait of the next selection, whose outcome
// decides between failover and failed); TurnEnd exactly once, after the
// usage record (if any) was handed to the sink and the client's answer
// written. The time to first token is TurnEnd's Usage.FirstTokenMS. The
// calls must not block or do I/O: update counters, start and end spans,
// hand anything slow to another goroutine. A panic in an observer is
// recovered and logged, and the turn goes on.
//
// Changes in an account's health (cooldowns, recoveries) are reported by
// the scheduler through Scheduler.OnAccountEvent; its current state by
// Scheduler.Snapshot.
type Observer struct {
	// TurnStart is called when a turn arrives, before authentication for
	// HTTP (so rejected requests are seen too). The context it returns
	// becomes the turn's: the later calls, the host hooks and the upstream
	// request see its values (a span, say). It must be ctx or derived from
	// it, since its cancellation is how the relay sees the client leave;
	// nil keeps ctx.
	TurnStart func(ctx context.Context, e TurnStart) context.Context

	// SlotWait is called after each wait for a slot: the user's, and the
	// account selection (which may wait for an account slot).
	SlotWait func(ctx context.Context, e SlotWait)

	// Attempt is called when an upstream attempt has ended: served, broken
	// after output, or failed (and then failed over or answered).
	Attempt func(ctx context.Context, e Attempt)

	// TurnEnd is called once per TurnStart, when the turn is over.
	TurnEnd func(ctx context.Context, e TurnEnd)
}

// TurnStart describes a turn that has just arrived. It carries no time:
// the call is made as the turn arrives, so an observer that wants the
// start reads its own clock (TurnEnd's Usage.CreatedAt is the relay's).
type TurnStart struct {
	RequestID string // also the X-Relay-Request-Id header and Usage.RequestID
	Transport string // "http", or "ws" for a WebSocket turn
	Number    int    // the turn's number on its connection, from 1 (Usage.Turn)
	// Who asked for which model is known later: TurnEnd carries both.
}

// SlotKind says which slot a SlotWait waited for.
type SlotKind string

const (
	SlotUser    SlotKind = "user"    // the user's concurrency slot
	SlotAccount SlotKind = "account" // account selection, including a wait for an account slot
)

// WaitOutcome is how a SlotWait ended.
type WaitOutcome string

const (
	WaitAcquired   WaitOutcome = "acquired"    // the slot was taken (at once or after waiting)
	WaitQueueFull              = "queue_full"  // the wait queue was full: 429
	WaitTimeout                = "timeout"     // the wait timed out: 429
	WaitClientGone             = "client_gone" // the client left while waiting
	WaitNoAccount              = "no_account"  // no account can take the turn (model, cooldowns, exclusions): 503
	WaitError                  = "error"       // the limiter or another hook failed: 503
	// WaitNotOwned: previous_response_id names another API key's response
	// (scheduler.ErrResponseNotOwned): 400 previous_response_not_found.
	WaitNotOwned = "not_owned"
)

// SlotWait is one wait for a slot. Like Attempt it names no turn: the
// context the call gets is the one TurnStart returned. It names no
// account either: an account selection that acquired one is followed by
// the Attempt on it, which names the account and how it was chosen.
type SlotWait struct {
	Kind SlotKind
	// Wait is how long the step took: near zero when a slot was free.
	Wait    time.Duration
	Outcome WaitOutcome
}

// AttemptOutcome is how an upstream attempt ended.
type AttemptOutcome string

const (
	AttemptServed     AttemptOutcome = "served"      // a terminal event (or a JSON answer) reached the client
	AttemptBroken                    = "broken"      // the upstream broke after output; the client got response.failed
	AttemptFailover                  = "failover"    // failed before output; the relay tries again: another account (one was found), or the same one once it fixed the cause (a renewed token, the chain sent whole)
	AttemptFailed                    = "failed"      // failed before output; the client gets the error (no retry, or no account left)
	AttemptClientGone                = "client_gone" // the client left during the attempt
)

// AttemptReason is why an upstream attempt failed.
type AttemptReason string

const (
	ReasonConnection  AttemptReason = "connection"  // dial, reset or EOF before response headers
	ReasonTimeout                   = "timeout"     // no response headers, or no event, in time
	ReasonStatus                    = "status"      // an HTTP error status: see Attempt.Status
	ReasonRefused                   = "refused"     // in-band refusal: failed before any output
	ReasonStream                    = "stream"      // the stream broke or was not a usable answer
	ReasonCredentials               = "credentials" // Credentials gave no token for the account
	ReasonAccount                   = "account"     // the account's configuration cannot serve (an invalid BodyPatch)
)

// Attempt is one upstream attempt. It carries no start time: the attempt
// began as the SlotWait of its account selection (SlotAccount,
// WaitAcquired) returned, and ended Duration later; the call comes then,
// or, for an attempt the turn moves on from, after the next selection.
type Attempt struct {
	N         int // 1 for the first attempt of the turn
	AccountID string
	Layer     scheduler.Layer // how the account was chosen
	Duration  time.Duration   // from the attempt's start until it ended (for a stream, its end)
	Status    int             // the upstream's HTTP status (200 for a WebSocket upstream that served); 0 when there was none
	Outcome   AttemptOutcome
	Reason    AttemptReason // "" when served
	// ContextRebuilt: the account did not hold the turn's
	// previous_response_id chain, and the relay sent it whole from its
	// conversation records.
	ContextRebuilt bool
	// ItemsRemoved counts the reasoning items left out of the input
	// because the account could not decrypt them (another account made
	// them, or an upstream refused one earlier in the turn).
	ItemsRemoved int
}

// Turn end statuses beyond the usage statuses (billing.Status*).
const (
	// TurnError: the turn ended with an error answer before any upstream
	// answered (authentication, validation, limits, billing, no account,
	// every attempt refused at the connection).
	TurnError = "error"
)

// TurnEnd describes a finished turn. Usage is what is known about it,
// whether or not a usage record was written: RequestID, Transport, Turn,
// UserAgent, ClientIP and CreatedAt (when the turn arrived, on the
// relay's clock) always; Model and Stream once the body was read ("" and
// false before); UserID, APIKeyID and GroupID once authenticated;
// AccountID, the account that served the turn or else the last one tried
// ("" when none was); Attempts (0 when no upstream was tried);
// DurationMS, to the usage record or, without one, to this call;
// FirstTokenMS, the time from arrival to the first output event (-1 when
// none arrived); tokens, ResponseID and UpstreamModel when an upstream
// answered (zero otherwise).
type TurnEnd struct {
	Subject *Subject // nil when authentication failed
	// Usage.Status is the usage status (billing.StatusCompleted,
	// ...Incomplete, ...Failed, ...UpstreamError, ...ClientGone) when the
	// turn reached an upstream; otherwise TurnError, or
	// billing.StatusClientGone when the client left first.
	Usage billing.Usage
	// Recorded says that Usage was handed to the sink as the turn's usage
	// record (then Usage is that record, but for an AccountID filled in
	// with the last account tried when the record names none); false when
	// no upstream answered, so no record was written, for a background
	// turn (its record is written when the response ends; Usage names it)
	// and for an input token count (it has none).
	Recorded bool
	// Code is the HTTP status the client was answered with (or would
	// have been: 499 when it left first). An error that follows a
	// committed event stream keeps its own status here.
	Code      int
	ErrorType string // the error's type when the answer was an error; "" otherwise
}

// observed turn state; zero when no Observer is set.
type turnObs struct {
	obs     *Observer
	code    int
	errType string
	account string
	// pending is a failed attempt whose outcome (failover or failed)
	// the next selection decides.
	pending    Attempt
	hasPending bool
}

func (t *turn) observing() bool { return t.obs.obs != nil }

// observerPanic logs a panic in an observer without failing the turn.
func (t *turn) observerPanic(what string) {
	if p := recover(); p != nil {
		t.h.log.Error("relay: Observer."+what+" panicked", "request_id", t.in.id, "panic", fmt.Sprint(p))
	}
}

func (t *turn) observeStart() {
	o := t.obs.obs
	if o == nil || o.TurnStart == nil {
		return
	}
	e := TurnStart{RequestID: t.in.id, Transport: t.in.transport, Number: t.in.number}
	func() {
		defer t.observerPanic("TurnStart")
		if ctx := o.TurnStart(t.ctx, e); ctx != nil {
			t.ctx = ctx
		}
	}()
}

func (t *turn) observeSlot(kind SlotKind, began time.Time, outcome WaitOutcome) {
	o := t.obs.obs
	if o == nil || o.SlotWait == nil {
		return
	}
	defer t.observerPanic("SlotWait")
	o.SlotWait(t.ctx, SlotWait{Kind: kind, Wait: t.h.now().Sub(began), Outcome: outcome})
}

func (t *turn) observeAttempt(sel *scheduler.Selection, began time.Time, ae *attemptError, outcome AttemptOutcome) {
	t.obs.account = sel.Account.ID
	o := t.obs.obs
	if o == nil || o.Attempt == nil {
		return
	}
	t.reportAttempt(t.attemptInfo(sel, began, ae, outcome))
}

func (t *turn) attemptInfo(sel *scheduler.Selection, began time.Time, ae *attemptError, outcome AttemptOutcome) Attempt {
	// The attempt that wrote the usage record ended where the record's
	// DurationMS was taken (emit), so that its duration fits in the turn's.
	end := t.rec.at
	if !t.rec.handed || !end.After(began) {
		end = t.h.now()
	}
	e := Attempt{N: t.up.n, AccountID: sel.Account.ID, Layer: sel.Layer,
		Duration: end.Sub(began), Outcome: outcome,
		ContextRebuilt: t.conv.rebuilt, ItemsRemoved: t.conv.removed}
	if ae != nil {
		e.Status, e.Reason = ae.status, ae.reason()
	} else {
		e.Status = t.obs.code // the upstream's status, passed on to the client
	}
	return e
}

func (t *turn) reportAttempt(e Attempt) {
	defer t.observerPanic("Attempt")
	t.obs.obs.Attempt(t.ctx, e)
}

// pendAttempt keeps a failed attempt until the next selection says
// whether the turn moves on.
func (t *turn) pendAttempt(sel *scheduler.Selection, began time.Time, ae *attemptError) {
	t.obs.account = sel.Account.ID
	if t.obs.obs.Attempt == nil {
		return
	}
	t.obs.pending, t.obs.hasPending = t.attemptInfo(sel, began, ae, AttemptFailover), true
}

// flushAttempt reports the pending attempt with its outcome: failover when
// another account was found; otherwise failed (or client_gone).
func (t *turn) flushAttempt(outcome AttemptOutcome) {
	if !t.obs.hasPending {
		return
	}
	t.obs.hasPending = false
	e := t.obs.pending
	if outcome == AttemptFailed && t.ctx.Err() != nil {
		outcome = AttemptClientGone
	}
	e.Outcome = outcome
	t.reportAttempt(e)
}

// served classifies a served attempt by the usage status it recorded.
func servedOutcome(status string) AttemptOutcome {
	switch status {
	case billing.StatusUpstreamError:
		return AttemptBroken
	case billing.StatusClientGone:
		return AttemptClientGone
	}
	return AttemptServed
}

// reason names why an attempt failed, for Attempt.Reason.
func (e *attemptError) reason() AttemptReason {
	switch e.kind {
	case failStatus:
		return ReasonStatus
	case failCredentials:
		return ReasonCredentials
	case failAccount:
		return ReasonAccount
	case failInBand:
		if e.refusal != nil {
			return ReasonRefused
		}
		if e.idleAbort {
			return ReasonTimeout
		}
		return ReasonStream
	}
	if e.idleAbort {
		return ReasonTimeout
	}
	return ReasonConnection
}

// answered notes the client's answer for TurnEnd.
func (t *turn) answered(code int, errType string) {
	if t.obs.code == 0 {
		t.obs.code, t.obs.errType = code, errType
	}
}

func (t *turn) observeEnd() {
	o := t.obs.obs
	if o == nil || o.TurnEnd == nil {
		return
	}
	e := TurnEnd{Subject: t.in.subj, Recorded: t.rec.handed, Code: t.obs.code, ErrorType: t.obs.errType}
	if t.rec.usage.RequestID != "" {
		e.Usage = t.rec.usage
		if !t.rec.handed {
			e.Usage.DurationMS = t.h.now().Sub(t.in.start).Milliseconds()
		}
	} else {
		e.Usage = t.baseUsage()
		e.Usage.DurationMS = t.h.now().Sub(t.in.start).Milliseconds()
		e.Usage.Status = TurnError
		if t.obs.code == statusClientGone || t.ctx.Err() != nil {
			e.Usage.Status = billing.StatusClientGone
		}
	}
	if e.Usage.AccountID == "" {
		e.Usage.AccountID = t.obs.account
	}
	if e.Code == 0 {
		e.Code = 200
		if e.Usage.Status == billing.StatusClientGone && !t.rec.done {
			e.Code = statusClientGone
		}
	}
	defer t.observerPanic("TurnEnd")
	o.TurnEnd(t.ctx, e)
}
