package ledgercheck

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// BenchHoldSettle measures one turn's money: a Hold against a key and a
// user with every limit set (none binds), then its Settle. parallel runs
// it from GOMAXPROCS goroutines on the same key and user, the contended
// case.
func BenchHoldSettle(b *testing.B, l billing.Ledger, parallel bool) {
	lim := billing.Limits{BudgetMicros: 1 << 52, RPM: 1 << 40, TPM: 1 << 50}
	var seq atomic.Int64
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	turn := func() {
		id := "bench-" + tag + "-" + strconv.FormatInt(seq.Add(1), 36)
		now := time.Now()
		q := billing.Request{RequestID: id, APIKeyID: "k-bench", UserID: "u-bench", HoldMicros: 1500, HoldTokens: 1000,
			KeyLimits: lim, UserLimits: lim, Now: now}
		if _, err := l.Hold(context.Background(), q); err != nil {
			b.Fatal(err)
		}
		u := billing.Usage{RequestID: id, APIKeyID: "k-bench", UserID: "u-bench", CostMicros: 1200, TotalTokens: 800, CreatedAt: now}
		if err := l.Settle(context.Background(), u); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	if !parallel {
		for b.Loop() {
			turn()
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			turn()
		}
	})
}
