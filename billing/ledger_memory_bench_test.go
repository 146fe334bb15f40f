package billing_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// ledgerIDs are distinct request ids, more than the benchmarks' ledgers
// remember settled, so that an id comes back only once forgotten.
var ledgerIDs = func() []string {
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("rr_%024x", i)
	}
	return ids
}()

// One turn's Hold and Settle, with a budget, RPM and TPM on the key and a
// budget on the user.
func BenchmarkMemoryLedgerHoldSettle(b *testing.B) {
	l := &billing.MemoryLedger{MaxSettled: 1 << 12}
	ctx := context.Background()
	q := billing.Request{APIKeyID: "key-1", UserID: "user-1", HoldMicros: 5000, HoldTokens: 9000,
		KeyLimits:  billing.Limits{BudgetMicros: 1 << 60, Period: billing.PeriodDay, RPM: 1 << 40, TPM: 1 << 60},
		UserLimits: billing.Limits{BudgetMicros: 1 << 60, Period: billing.PeriodMonth}}
	u := billing.Usage{APIKeyID: "key-1", UserID: "user-1", CostMicros: 4000, TotalTokens: 3000}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		now := time.Now()
		q.RequestID, q.Now = ledgerIDs[i%len(ledgerIDs)], now
		u.RequestID, u.CreatedAt = q.RequestID, now
		i++
		if _, err := l.Hold(ctx, q); err != nil {
			b.Fatal(err)
		}
		if err := l.Settle(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
}

// The same from every core at once, over 64 keys: the cost of the one
// mutex.
func BenchmarkMemoryLedgerHoldSettleParallel(b *testing.B) {
	l := &billing.MemoryLedger{MaxSettled: 1 << 12}
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	lim := billing.Limits{BudgetMicros: 1 << 60, RPM: 1 << 40, TPM: 1 << 60}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			n := next.Add(1)
			id := ledgerIDs[n%int64(len(ledgerIDs))]
			key := keys[n%int64(len(keys))]
			now := time.Now()
			if _, err := l.Hold(ctx, billing.Request{RequestID: id, APIKeyID: key, UserID: key, KeyLimits: lim, HoldMicros: 5000, HoldTokens: 9000, Now: now}); err != nil {
				b.Fatal(err)
			}
			if err := l.Settle(ctx, billing.Usage{RequestID: id, APIKeyID: key, UserID: key, CostMicros: 4000, TotalTokens: 3000, CreatedAt: now}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
