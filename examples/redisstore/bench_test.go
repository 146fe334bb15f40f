package redisstore_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/concurrency"
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

// convBenchRecord is a record of about 4 KiB (a typical turn).
var convBenchRecord = []byte(`{"response_id":"resp_1","api_key_id":"k","input":[{"role":"user","content":"` +
	strings.Repeat("x", 3800) + `"}],"output":[]}`)

// BenchmarkConversationsPut stores records of about 4 KiB: one SET round
// trip each.
func BenchmarkConversationsPut(b *testing.B) {
	c := newClient(b)
	p := prefix(b, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	b.SetBytes(int64(len(convBenchRecord)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Put(ctx, "k", "resp_"+strconv.Itoa(i%1000), convBenchRecord); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkConversationsGet(b *testing.B) {
	c := newClient(b)
	p := prefix(b, c)
	s := redisstore.NewConversations(c, &redisstore.ConversationOptions{Prefix: p})
	ctx := context.Background()
	for i := range 1000 {
		if err := s.Put(ctx, "k", "resp_"+strconv.Itoa(i), convBenchRecord); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "k", "resp_"+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
