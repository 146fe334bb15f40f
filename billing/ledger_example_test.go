package billing_test

import (
	"context"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Hold a turn's estimate before it goes upstream, settle its cost when
// its usage record comes, and read what is left. A relay does the first
// itself (relay.Handler.Ledger) and the second through billing.Settling
// around its usage sink.
func ExampleMemoryLedger() {
	var ledger billing.MemoryLedger
	ctx := context.Background()
	limits := billing.Limits{BudgetMicros: 1_000_000, Period: billing.PeriodDay, RPM: 60} // $1 a day
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	turn := func(id string, estimate int64) billing.Request {
		return billing.Request{RequestID: id, APIKeyID: "key-1", KeyLimits: limits, HoldMicros: estimate, Now: now}
	}

	left, err := ledger.Hold(ctx, turn("rr_1", 400_000))
	fmt.Println("rr_1:", left.Requests, "requests and", left.BudgetMicros, "micro-USD left;", err)

	// The first turn's hold counts until it settles.
	_, err = ledger.Hold(ctx, turn("rr_2", 700_000))
	fmt.Println("rr_2:", err)

	_ = ledger.Settle(ctx, billing.Usage{RequestID: "rr_1", APIKeyID: "key-1", CostMicros: 250_000, CreatedAt: now})
	left, err = ledger.Hold(ctx, turn("rr_3", 700_000))
	fmt.Println("rr_3:", left.BudgetMicros, "left;", err)

	b, _ := ledger.Balance(ctx, "key-1", limits, now)
	fmt.Printf("%s: spent %d, held %d in %d turn(s), %d left\n", b.Period, b.SpentMicros, b.HeldMicros, b.Holds, b.RemainingMicros)
	// Output:
	// rr_1: 59 requests and 600000 micro-USD left; <nil>
	// rr_2: billing: The budget of this API key for today (UTC) is spent.
	// rr_3: 50000 left; <nil>
	// 2026-03-10: spent 250000, held 700000 in 1 turn(s), 50000 left
}
