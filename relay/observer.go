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
// ServeHTTP goroutine, or the caller of serveMessage), in this order:
// TurnStart once; SlotWait for the user slot (when the subject has a
// limit) and for each account selection; FirstToken at most once, when the
// first output event arrives; Attempt once per upstream attempt, when it
// has ended; TurnEnd exactly once, after the usage record (if any) was
// handed to the sink and the client's answer written. They must not block
// or do I/O: update counters, start and end spans, hand anything slow to
// another goroutine. A panic in an observer is recovered and logged, and
// the turn goes on.
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

	// FirstToken is called when the first output event of the turn
	// arrives from the upstream, before it is forwarded.
	FirstToken func(ctx context.Context, e FirstToken)

	// Attempt is called when an upstream attempt has ended: served, broken
	// after output, or failed (and then failed over or answered).
	Attempt func(ctx context.Context, e Attempt)

	// TurnEnd is called once per TurnStart, when the turn is over.
	TurnEnd func(ctx context.Context, e TurnEnd)
}

// TurnStart describes a turn that has just arrived.
type TurnStart struct {
	RequestID string // also the X-Relay-Request-Id header and Usage.RequestID
	Transport string // "http", or the transport given to serveMessage ("ws")
	Number    int    // the turn's number on its connection, from 1 (Turn.Number)
	Start     time.Time
	// Subject and Model are known at start for serveMessage; for HTTP they
	// are nil and "" (the request is not read yet): TurnEnd carries them.
	Subject *Subject
	Model   string
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

// SlotWait is one wait for a slot. Like FirstToken and Attempt it names no
// turn: the context the call gets is the one TurnStart returned.
type SlotWait struct {
	Kind SlotKind
	// AccountID is the account selected (SlotAccount with WaitAcquired).
	AccountID string
	// Layer is how the account was chosen (SlotAccount with WaitAcquired).
	Layer scheduler.Layer
	// Wait is how long the step took: near zero when a slot was free.
	Wait    time.Duration
	Outcome WaitOutcome
}

// FirstToken is the first output event of a turn.
type FirstToken struct {
	AccountID string
	Model     string        // as the client asked for it
	TTFT      time.Duration // since the turn arrived
}

// AttemptOutcome is how an upstream attempt ended.
type AttemptOutcome string

const (
	AttemptServed     AttemptOutcome = "served"      // a terminal event (or a JSON answer) reached the client
	AttemptBroken                    = "broken"      // the upstream broke after output; the client got response.failed
	AttemptFailover                  = "failover"    // failed before output; the relay tries another account (one was found)
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
)

// Attempt is one upstream attempt.
type Attempt struct {
	N         int // 1 for the first attempt of the turn
	AccountID string
	Layer     scheduler.Layer
	Start     time.Time
	Duration  time.Duration // from Start until the attempt ended (for a stream, its end)
	Status    int           // the upstream's HTTP status (200 for a WebSocket upstream that served); 0 when there was none
	Outcome   AttemptOutcome
	Reason    AttemptReason // "" when served
}

// Turn end statuses beyond the usage statuses (billing.Status*).
const (
	// TurnError: the turn ended with an error answer before any upstream
	// answered (authentication, validation, limits, billing, no account,
	// every attempt refused at the connection).
	TurnError = "error"
)

// TurnEnd describes a finished turn.
type TurnEnd struct {
	RequestID string
	Transport string
	Subject   *Subject // nil when authentication failed
	Model     string   // as the client asked for it; "" when the body was not valid
	Stream    bool
	// AccountID is the account that served the turn, or the last one tried.
	AccountID string
	// Status is the usage status (billing.StatusCompleted, ...Incomplete,
	// ...Failed, ...UpstreamError, ...ClientGone) when the turn reached an
	// upstream; otherwise TurnError, or billing.StatusClientGone when the
	// client left first.
	Status string
	// Code is the HTTP status the client was answered with (or would
	// have been: 499 when it left first). An error that follows a
	// committed event stream keeps its own status here.
	Code      int
	ErrorType string // the error's type when the answer was an error
	// Usage is the usage record, or nil when none was written.
	Usage    *billing.Usage
	Attempts int
	Duration time.Duration
}

// observed turn state; zero when no Observer is set.
type turnObs struct {
	obs       *Observer
	code      int
	errType   string
	account   string
	firstSeen bool
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
	e := TurnStart{RequestID: t.in.id, Transport: t.in.transport, Number: t.in.number, Start: t.in.start, Subject: t.in.subj}
	if t.in.req != nil {
		e.Model = t.in.req.Model
	}
	func() {
		defer t.observerPanic("TurnStart")
		if ctx := o.TurnStart(t.ctx, e); ctx != nil {
			t.ctx = ctx
		}
	}()
}

func (t *turn) observeSlot(kind SlotKind, began time.Time, sel *scheduler.Selection, outcome WaitOutcome) {
	o := t.obs.obs
	if o == nil || o.SlotWait == nil {
		return
	}
	e := SlotWait{Kind: kind, Wait: t.h.now().Sub(began), Outcome: outcome}
	if sel != nil {
		e.AccountID, e.Layer = sel.Account.ID, sel.Layer
	}
	defer t.observerPanic("SlotWait")
	o.SlotWait(t.ctx, e)
}

// firstOutput is the pump's FirstOutput hook; nil when nobody listens.
func (t *turn) firstOutput(acct string) func(time.Time) {
	o := t.obs.obs
	if o == nil || o.FirstToken == nil {
		return nil
	}
	return func(at time.Time) { t.observeFirst(acct, at) }
}

func (t *turn) observeFirst(acct string, at time.Time) {
	o := t.obs.obs
	if o == nil || o.FirstToken == nil || t.obs.firstSeen {
		return
	}
	t.obs.firstSeen = true
	defer t.observerPanic("FirstToken")
	o.FirstToken(t.ctx, FirstToken{AccountID: acct, Model: t.in.req.Model, TTFT: at.Sub(t.in.start)})
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
	e := Attempt{N: t.up.n, AccountID: sel.Account.ID, Layer: sel.Layer,
		Start: began, Duration: t.h.now().Sub(began), Outcome: outcome}
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
	e := TurnEnd{RequestID: t.in.id, Transport: t.in.transport, Subject: t.in.subj, Attempts: t.up.n,
		Duration: t.h.now().Sub(t.in.start), Code: t.obs.code, ErrorType: t.obs.errType, AccountID: t.obs.account}
	if t.in.req != nil {
		e.Model, e.Stream = t.in.req.Model, t.in.req.Stream
	}
	switch {
	case t.rec.done:
		u := t.rec.usage
		e.Usage, e.Status = &u, u.Status
		if u.AccountID != "" {
			e.AccountID = u.AccountID
		}
	case t.obs.code == statusClientGone || t.ctx.Err() != nil:
		e.Status = billing.StatusClientGone
	default:
		e.Status = TurnError
	}
	if e.Code == 0 {
		e.Code = 200
		if e.Status == billing.StatusClientGone && !t.rec.done {
			e.Code = statusClientGone
		}
	}
	defer t.observerPanic("TurnEnd")
	o.TurnEnd(t.ctx, e)
}
