package scheduler

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Request is what Select needs to know about a turn.
type Request struct {
	Group    string
	Model    string // as the client asked for it
	APIKeyID string // namespaces session keys, so tenants never share bindings

	// PreviousResponseID is the body's previous_response_id, if any.
	PreviousResponseID string
	// SessionKey is the client's session identity (header session_id, then
	// conversation_id, then body prompt_cache_key); "" for none.
	SessionKey string

	// PreferAccount, when set, is tried before the sticky layers, with the
	// same escape rules: the account a WebSocket connection is pinned to.
	PreferAccount string
	// RequireAccount, when set, is the only account the turn may go to: it
	// carries state only that account can read (a compaction item it
	// encrypted). When that account cannot serve the turn (gone, excluded,
	// cooling down, failing, slow, not serving the model, or full after a
	// bounded wait), Select fails with a *NoAccountError of Reason
	// ReasonRequired; no other account is tried.
	RequireAccount string

	// WebSocket asks for an account that serves the Responses WebSocket
	// mode (Account.WebSocket).
	WebSocket bool
	// Exclude lists account IDs that already failed this turn.
	Exclude []string
	// Wait enables waiting for an account slot when every candidate is
	// full; false fails at once with ErrAccountsBusy.
	Wait bool
}

// Layer says which selection layer chose the account.
type Layer string

const (
	LayerPinned           Layer = "pinned"
	LayerPreviousResponse Layer = "previous_response"
	LayerSession          Layer = "session"
	LayerBalanced         Layer = "balanced"
)

// Selection is a chosen account holding one of its slots.
type Selection struct {
	Account       *Account
	UpstreamModel string // the model to send upstream
	Layer         Layer
	// Release gives the account slot back. It is idempotent and must be
	// called once the turn is done with the account.
	Release func()
}

// NoAccountError is Select's answer when no account can take the turn. The
// relay answers 503 "No available accounts"; Error() carries the detail for
// the operator's log (how many accounts the group has, how many serve the
// model and transport).
type NoAccountError struct {
	// Reason is one of the Reason constants.
	Reason string
	// Until is the earliest time a cooling-down account is back (Reason
	// ReasonCoolingDown, or ReasonRequired when that account cools down).
	Until time.Time

	group, model    string // of the turn; Error names them
	webSocket       bool
	total, eligible int
	detail          string // ReasonRequired: the account and why it cannot serve
}

// Reasons for NoAccountError.
const (
	ReasonNoAccounts  = "no_accounts"  // the group has no account at all
	ReasonModel       = "model"        // no account in the group serves the model (or transport)
	ReasonCoolingDown = "cooling_down" // every eligible account is cooling down
	ReasonExcluded    = "excluded"     // every eligible account already failed this turn
	ReasonRequired    = "required"     // Request.RequireAccount cannot serve the turn
)

func (e *NoAccountError) Error() string {
	switch e.Reason {
	case ReasonNoAccounts:
		return fmt.Sprintf("scheduler: group %q has no accounts", e.group)
	case ReasonModel:
		if e.webSocket {
			return fmt.Sprintf("scheduler: none of the %d accounts in group %q serves model %q over WebSocket", e.total, e.group, e.model)
		}
		return fmt.Sprintf("scheduler: none of the %d accounts in group %q serves model %q", e.total, e.group, e.model)
	case ReasonCoolingDown:
		return fmt.Sprintf("scheduler: all %d eligible accounts for model %q in group %q are cooling down; the earliest is back at %s",
			e.eligible, e.model, e.group, e.Until.UTC().Format(time.RFC3339))
	case ReasonExcluded:
		return fmt.Sprintf("scheduler: all %d eligible accounts for model %q in group %q failed this request", e.eligible, e.model, e.group)
	case ReasonRequired:
		return fmt.Sprintf("scheduler: the required account %s in group %q cannot serve model %q", e.detail, e.group, e.model)
	}
	return fmt.Sprintf("scheduler: no available account for model %q in group %q (%s)", e.model, e.group, e.Reason)
}

// ErrAccountsBusy is returned (wrapped) when every candidate account is at
// its concurrency limit and Request.Wait is false. With Wait, the limiter's
// concurrency.ErrQueueFull or concurrency.ErrWaitTimeout come back instead.
var ErrAccountsBusy = errors.New("scheduler: all candidate accounts are busy")

// ErrLimiter is returned (wrapped) when the account limiter itself failed
// (a shared backend such as Redis is unreachable), as opposed to accounts
// being full.
var ErrLimiter = errors.New("scheduler: account limiter unavailable")

// OutcomeKind classifies one upstream attempt for passive health.
type OutcomeKind int

const (
	OutcomeSuccess     OutcomeKind = iota // the upstream served the turn (any terminal event, or a 2xx JSON)
	OutcomeStatus                         // an HTTP error status: see Status, Header, Body
	OutcomeConnError                      // dial, TLS, reset or EOF before response headers
	OutcomeOverloaded                     // in-band refusal: a 200 stream that failed before any output
	OutcomeStreamError                    // reset, EOF or idle timeout after the stream started
	OutcomeClientError                    // a 4xx caused by the request itself (400, 404, 413, 422): no penalty
)

// Outcome is one upstream attempt, reported through Observe.
type Outcome struct {
	Kind   OutcomeKind
	Status int         // HTTP status, when there was one
	Header http.Header // response headers (rate-limit and reset headers)
	Body   []byte      // the start of an error body (HTML vs JSON, "overloaded")
	// Err is the transport error, for connection errors; for a 401, why
	// the credentials could not be renewed (it joins the cooldown's
	// reason, so it must not carry token text).
	Err error
	// TTFT is the time to the first output event (success only; 0 unknown).
	TTFT time.Duration
}

// AccountEvent is a change in an account's health, sent to OnAccountEvent.
type AccountEvent struct {
	AccountID string
	Kind      string    // one of the Event constants
	Until     time.Time // end of the cooldown, zero for recovered
	Status    int       // the HTTP status behind it, 0 when none
	Reason    string    // human-readable cause
}

// AccountEvent kinds.
const (
	EventRateLimited     = "rate_limited"
	EventUnauthorized    = "unauthorized"
	EventPaymentRequired = "payment_required"
	EventForbidden       = "forbidden"
	EventOverloaded      = "overloaded"
	EventUnhealthy       = "unhealthy"
	EventRecovered       = "recovered"
)
