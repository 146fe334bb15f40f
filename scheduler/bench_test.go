package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			pool := NewStaticPool()
			pool.Set("g", accounts(n, func(i int) *Account {
				return &Account{Models: []string{"gpt-*"}, Concurrency: 10, Weight: 1 + i%3}
			}))
			s := &Scheduler{Pool: pool}
			ctx := context.Background()
			q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k"}
			// The first Select builds the cached view of the pool.
			if sel, err := s.Select(ctx, q); err == nil {
				sel.Release()
			}
			b.ReportAllocs()
			for b.Loop() {
				sel, err := s.Select(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				sel.Release()
			}
		})
	}
}

func BenchmarkSelectSticky(b *testing.B) {
	pool := NewStaticPool()
	pool.Set("g", accounts(10000, func(int) *Account { return &Account{Concurrency: 10} }))
	s := &Scheduler{Pool: pool}
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", SessionKey: "session-1"}
	if err := s.Bind(ctx, q, "a00042", ""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		sel, err := s.Select(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if sel.Layer != LayerSession {
			b.Fatalf("layer %s", sel.Layer)
		}
		sel.Release()
	}
}

// BenchmarkSelectObserved runs over a pool with health data: latencies
// from 0.5 to 5 s, a few accounts failing and a tenth cooling down.
func BenchmarkSelectObserved(b *testing.B) {
	const n = 10000
	pool := NewStaticPool()
	pool.Set("g", accounts(n, func(i int) *Account { return &Account{Concurrency: 10, Weight: 1 + i%3} }))
	s := &Scheduler{Pool: pool}
	for i := range n {
		id := fmt.Sprintf("a%05d", i)
		s.Observe(id, Outcome{Kind: OutcomeSuccess, TTFT: time.Duration(500+i%4500) * time.Millisecond})
		switch {
		case i%10 == 0:
			s.Observe(id, Outcome{Kind: OutcomeStatus, Status: 429, Header: http.Header{"Retry-After": {"3600"}}})
		case i%97 == 0:
			s.Observe(id, Outcome{Kind: OutcomeStatus, Status: 502})
		}
	}
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5"}
	if sel, err := s.Select(ctx, q); err == nil {
		sel.Release()
	}
	b.ReportAllocs()
	for b.Loop() {
		sel, err := s.Select(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		sel.Release()
	}
}

// BenchmarkObserve is the health bookkeeping of one turn: mostly
// successes, with a connection error now and then.
func BenchmarkObserve(b *testing.B) {
	s := &Scheduler{Pool: NewStaticPool()}
	ok := Outcome{Kind: OutcomeSuccess, TTFT: time.Second}
	bad := Outcome{Kind: OutcomeConnError, Err: errors.New("connection reset")}
	s.Observe("a", ok)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i++; i%16 == 0 {
			s.Observe("a", bad)
		} else {
			s.Observe("a", ok)
		}
	}
}
