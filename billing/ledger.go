package billing

import (
	"context"
	"fmt"
	"time"
)

// A Ledger keeps money and rate limits for turns in flight, so that
// concurrent turns cannot overrun a budget: check-then-debit lets twenty
// parallel turns of a key with one cent left all pass the check.
//
// Before a turn goes upstream the relay calls Hold with the turn's
// estimated cost (Request.HoldMicros) and tokens (Request.HoldTokens). A
// Ledger admits it only if the spent budget, plus every hold in flight,
// plus this one fits the budget, and then keeps the hold until the turn
// ends. The turn ends exactly one of two ways:
//
//   - it reached an upstream, and so has a usage record: Settle debits the
//     record's CostMicros (in full, even beyond the hold) and ends the hold.
//     Settle runs in the usage path, where Settling puts it (see there), so
//     that a record replayed from a spool after a crash settles too;
//   - it never reached one (the client left while queued, every account
//     refused, a hook failed): the relay calls Release.
//
// Both are idempotent by request id: a second Settle of a record, or a
// Release after a Settle, changes nothing. A hold whose turn never ends
// (the process was killed) expires after the Ledger's hold lifetime.
//
// The overspend bound: a turn debited beyond its hold overran it, and
// only such overruns can take a budget below zero, so at any time
// remaining budget ≥ −(sum of the overruns of the turns in flight). With
// max_output_tokens set, a turn's hold covers its output; what can overrun
// is input the relay could not see (a previous_response_id chain's
// history at the upstream, images).
//
// Methods must be safe for concurrent use. A *Denial from Hold refuses the
// turn as the Gate's does; any other error refuses it with 503 (fail
// closed).
type Ledger interface {
	Hold(ctx context.Context, q Request) (Remaining, error)
	Settle(ctx context.Context, u Usage) error
	Release(ctx context.Context, requestID string) error
}

// Remaining is what a key has left after a hold, for the answer's
// headers. A negative field means unlimited.
type Remaining struct {
	Requests     int64 // in the current minute (x-ratelimit-remaining-requests)
	Tokens       int64 // in the current minute (x-ratelimit-remaining-tokens)
	BudgetMicros int64 // in the current budget period (X-Relay-Budget-Remaining-Micros)
}

// Unlimited is the Remaining of a key without limits.
var Unlimited = Remaining{Requests: -1, Tokens: -1, BudgetMicros: -1}

// Limits are the quotas of one API key or one user. A zero field is
// unlimited.
type Limits struct {
	// BudgetMicros is the money, in micro-USD, the key may spend per
	// Period.
	BudgetMicros int64
	// Period is the budget's window: "" or "total" (never resets), "day"
	// or "month", calendar periods in UTC. A turn's cost counts in the
	// period of its start (Usage.CreatedAt).
	Period string
	// RPM is requests per minute and TPM tokens per minute, in fixed
	// windows of a UTC minute. A hold counts its request and HoldTokens at
	// once; Settle corrects the tokens to the turn's TotalTokens.
	RPM int64
	TPM int64
}

// Budget periods of Limits.
const (
	PeriodTotal = "total"
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// PeriodKey names the budget window of t: "total", "2026-12-04" or
// "2026-12". Ledgers that store spend key it by this name.
func PeriodKey(period string, t time.Time) string {
	t = t.UTC()
	switch period {
	case PeriodDay:
		return t.Format("2006-01-02")
	case PeriodMonth:
		return t.Format("2006-01")
	}
	return PeriodTotal
}

// Settling is next with the ledger's Settle before each record: a
// record is passed on only once its turn is settled, so that a sink
// behind OpenSpool or NewAsync that retries or replays a record after a
// crash also settles it (Settle is idempotent). Put it innermost, right
// around the host's own sink:
//
//	usage, _ := billing.OpenSpool(dir, billing.Settling(ledger, sqlSink), billing.DeliveryOptions{})
//
// When next is a BatchSink, so is the sink returned: its RecordBatch
// settles the records in order and then passes the whole batch to next's
// RecordBatch; when a Settle fails, it returns that error and passes
// nothing on (the records settled so far are settled again, without
// effect, when the batch or its records are delivered again).
func Settling(l Ledger, next UsageSink) UsageSink {
	if bs, ok := next.(BatchSink); ok {
		return settlingBatch{l: l, next: bs}
	}
	return SinkFunc(func(ctx context.Context, u Usage) error {
		if err := l.Settle(ctx, u); err != nil {
			return err
		}
		if next == nil {
			return nil
		}
		return next.Record(ctx, u)
	})
}

// settlingBatch is Settling over a BatchSink.
type settlingBatch struct {
	l    Ledger
	next BatchSink
}

func (s settlingBatch) Record(ctx context.Context, u Usage) error {
	if err := s.l.Settle(ctx, u); err != nil {
		return err
	}
	return s.next.Record(ctx, u)
}

func (s settlingBatch) RecordBatch(ctx context.Context, us []Usage) error {
	for _, u := range us {
		if err := s.l.Settle(ctx, u); err != nil {
			return fmt.Errorf("billing: settle %s: %w", u.RequestID, err)
		}
	}
	return s.next.RecordBatch(ctx, us)
}
