package redisstore_test

import (
	"context"
	"testing"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/examples/internal/convtest"
	"github.com/relaykit/responsesrelay/examples/internal/ledgercheck"
	"github.com/relaykit/responsesrelay/examples/redisstore"
)

// BenchmarkAcquireRelease measures one TryAcquire and its release against
// the real server: two script round trips.
func BenchmarkAcquireRelease(b *testing.B) {
	c := newClient(b)
	p := prefix(b, c)
	l := newLimiter(b, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		release, ok, err := l.TryAcquire(ctx, "user:bench", 64)
		if err != nil || !ok {
			b.Fatalf("ok=%v err=%v", ok, err)
		}
		release()
	}
}

// BenchmarkAcquireReleaseParallel is the same from GOMAXPROCS goroutines on
// one key, through Acquire (the relay's path for user slots).
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	c := newClient(b)
	p := prefix(b, c)
	l := newLimiter(b, c, &redisstore.LimiterOptions{Prefix: p})
	ctx := context.Background()
	o := concurrency.WaitOptions{MaxWaiters: 1000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := l.Acquire(ctx, "user:bench", 1<<20, o)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
}

// BenchmarkConversationsPut stores records of about 4 KiB: one SET round
// trip each.
func BenchmarkConversationsPut(b *testing.B) {
	c := newClient(b)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: prefix(b, c)})
	convtest.BenchPut(b, s, 1000)
}

func BenchmarkConversationsGet(b *testing.B) {
	c := newClient(b)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: prefix(b, c)})
	convtest.BenchGet(b, s)
}

// BenchmarkLedgerHoldSettle is one turn's money: a Hold against a key and
// a user with every limit set, then its Settle; two script round trips.
func BenchmarkLedgerHoldSettle(b *testing.B) {
	c := newClient(b)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: prefix(b, c)})
	ledgercheck.BenchHoldSettle(b, l, false)
}

// BenchmarkLedgerHoldSettleParallel is the same from GOMAXPROCS goroutines
// on one key and user, the contended case.
func BenchmarkLedgerHoldSettleParallel(b *testing.B) {
	c := newClient(b)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: prefix(b, c)})
	ledgercheck.BenchHoldSettle(b, l, true)
}
