// Package billing holds the two points where a relay meets the host's money:
// the Gate, asked before a turn goes upstream, and the UsageSink, told once
// per turn what it cost.
//
// A UsageSink is called at the end of every turn, so a sink that writes to
// a database should be wrapped in NewAsync: records are delivered by a pool
// of workers with retries, a full queue slows callers down instead of
// losing records, and a record that cannot be stored reaches
// DeliveryOptions.OnDropped and an error log line carrying it as JSON. A
// sink that can store several records in one call (one transaction)
// implements BatchSink, and NewAsync then hands it the records queued
// together in batches.
//
// Async's queue is in memory. When records must also survive a crash or a
// restart, wrap the sink in OpenSpool instead: Record returns once the
// record is synced to a local append-only file, workers deliver it from
// there and acknowledge it, and the next OpenSpool delivers again whatever
// was not acknowledged. A sink behind either must be idempotent by
// Usage.RequestID, since a record can reach it twice.
//
// MemorySink keeps records in memory, for tests.
//
// Prices prices a record: a Price per model (exact names and wildcards, in
// micro-USD per 1M tokens) and a multiplier per group, built by NewPrices,
// possibly from the price file most gateways share (ReadPriceFile). Its
// Cost is exact integer arithmetic, rounded half up once, for
// Usage.CostMicros.
//
// A Ledger holds money and rate limits for the turns in flight, so that
// parallel turns cannot together overrun a key's budget: held before the
// upstream call, settled by the usage record (Settling), released when no
// upstream was reached. MemoryLedger keeps them in the process; a ledger
// in a shared store serves several instances.
//
// # Example
//
//	usage, err := billing.OpenSpool("/var/lib/relay/usage", mySQLSink, billing.DeliveryOptions{})
//	if err != nil {
//		return err
//	}
//	h := &relay.Handler{Usage: usage /* , ... */}
//	// ... serve ...
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	usage.Close(ctx) // after the server stopped: delivers what is pending
package billing

import (
	"context"
	"fmt"
	"time"
)

// Request is what a Gate sees of a turn before it goes upstream.
type Request struct {
	UserID   string
	APIKeyID string
	GroupID  string
	Model    string // the model the client asked for
	Stream   bool
	// Transport is "http" or "ws".
	Transport string
	// Meta is the host's own value from the authenticated subject.
	Meta any

	// The rest is for a Ledger's Hold (a Gate sees it too).

	// RequestID is the turn's id, Usage.RequestID of its record.
	RequestID string
	// HoldMicros is the relay's estimate of the turn's cost in micro-USD:
	// its input (the body's bytes / 3, rounded up) plus its output cap
	// (max_output_tokens, else Handler.DefaultOutputCap) at the model's
	// price. 0 without prices or for an unpriced model.
	HoldMicros int64
	// HoldTokens is the same estimate in tokens, for a TPM limit.
	HoldTokens int64
	// KeyLimits and UserLimits are the subject's quotas (relay.Subject).
	KeyLimits  Limits
	UserLimits Limits
	// Now is when the turn started (Usage.CreatedAt): its budget period
	// and rate-limit minute.
	Now time.Time
}

// Gate decides whether a turn may run (balance, quota, plan).
//
// Check returns nil to allow. A *Denial decides the client's status, error
// type, message and Retry-After; any other error is treated as the gate
// being unavailable and the turn is refused with 503 (fail closed).
type Gate interface {
	Check(ctx context.Context, q Request) error
}

// GateFunc adapts a function to Gate.
type GateFunc func(ctx context.Context, q Request) error

// Check calls f.
func (f GateFunc) Check(ctx context.Context, q Request) error { return f(ctx, q) }

// Denial is a Gate's refusal, shown to the client as an OpenAI-shaped error.
//
// The zero Denial answers as OpenAI answers an exhausted quota: 429 with
// type and code "insufficient_quota", which the official SDKs recognise
// (they do not retry it, unlike a rate limit).
//
// The relay turns a Denial into the client's answer; a
// zero field takes the default in its comment.
type Denial struct {
	Status     int           // HTTP status; 0: 429
	Type       string        // error type; "": "insufficient_quota"
	Code       string        // error code; "": the type when Type is "", else null
	Message    string        // client-facing message; "": "Request denied by billing policy"
	RetryAfter time.Duration // > 0 sets Retry-After (rounded up to seconds)
}

func (d *Denial) Error() string {
	msg := d.Message
	if msg == "" {
		msg = "denied"
	}
	if d.Status != 0 {
		return fmt.Sprintf("billing: %d %s", d.Status, msg)
	}
	return "billing: " + msg
}
