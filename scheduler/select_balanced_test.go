package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/internal/knob"
)

func TestSelectPriorityTiers(t *testing.T) {
	low := &Account{ID: "low", Priority: 1, Concurrency: 10}
	high := &Account{ID: "high", Priority: 0, Concurrency: 1}
	f := newFixture(t, low, high)
	q := Request{Group: "g", Model: "gpt-5"}

	held, err := f.s.Select(context.Background(), q)
	if err != nil || held.Account.ID != "high" || held.Layer != LayerBalanced {
		t.Fatalf("got %+v, %v; want high", held, err)
	}
	// high is full: the next tier serves.
	if id := f.pick(t, q); id != "low" {
		t.Fatalf("picked %s while high is full, want low", id)
	}
	held.Release()
	for range 20 {
		if id := f.pick(t, q); id != "high" {
			t.Fatalf("picked %s, want the preferred tier", id)
		}
	}
}

func TestSelectPrefersLessLoaded(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	q := Request{Group: "g", Model: "gpt-5"}
	busy := q
	busy.Exclude = []string{"b"}
	for range 3 {
		sel, err := f.s.Select(context.Background(), busy)
		if err != nil || sel.Account.ID != "a" {
			t.Fatalf("got %+v, %v", sel, err)
		}
		defer sel.Release()
	}
	if n := f.s.InFlight("a"); n != 3 {
		t.Fatalf("InFlight(a) = %d, want 3", n)
	}
	for range 50 {
		if id := f.pick(t, q); id != "b" {
			t.Fatalf("picked %s with 3 turns in flight, want the idle b", id)
		}
	}
}

func TestSelectAvoidsErrorsAndLatency(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	q := Request{Group: "g", Model: "gpt-5"}
	// Scores: a 0.2 + 0.01, b 0.21, c 0.017; a and b share a bucket.
	f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: 300 * time.Millisecond})
	f.s.Observe("a", status(500, ""))
	f.s.Observe("b", Outcome{Kind: OutcomeSuccess, TTFT: 6300 * time.Millisecond})
	f.s.Observe("c", Outcome{Kind: OutcomeSuccess, TTFT: 500 * time.Millisecond})
	for range 50 {
		if id := f.pick(t, q); id != "c" {
			t.Fatalf("picked %s, want the healthy, fast c", id)
		}
	}
	// A fully loaded c is worse than both.
	for range 10 {
		sel, err := f.s.Select(context.Background(), Request{Group: "g", Model: "gpt-5", Exclude: []string{"a", "b"}})
		if err != nil {
			t.Fatal(err)
		}
		defer sel.Release()
	}
	seen := map[string]int{}
	for range 50 {
		seen[f.pick(t, q)]++
	}
	if seen["c"] != 0 || seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("picks %v, want a and b only", seen)
	}
}

func TestSelectExcludeTransportAndModelMap(t *testing.T) {
	f := newFixture(t,
		&Account{ID: "http-only", Concurrency: 5},
		&Account{ID: "ws", Concurrency: 5, WebSocket: true, ModelMap: map[string]string{"gpt-5": "gpt-5-2026-01-01"}},
		&Account{ID: "ws2", Concurrency: 5, WebSocket: true, Models: []string{"gpt-*"}},
	)
	ctx := context.Background()
	for range 50 {
		sel, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", WebSocket: true})
		if err != nil {
			t.Fatal(err)
		}
		sel.Release()
		switch sel.Account.ID {
		case "ws":
			if sel.UpstreamModel != "gpt-5-2026-01-01" {
				t.Fatalf("upstream model %q", sel.UpstreamModel)
			}
		case "ws2":
			if sel.UpstreamModel != "gpt-5" {
				t.Fatalf("upstream model %q", sel.UpstreamModel)
			}
		default:
			t.Fatalf("WebSocket turn on %s", sel.Account.ID)
		}
	}
	for range 50 {
		id := f.pick(t, Request{Group: "g", Model: "o3", Exclude: []string{"ws"}})
		if id != "http-only" {
			t.Fatalf("picked %s for o3 with ws excluded", id)
		}
	}
}

func TestSelectBusy(t *testing.T) {
	f := newFixture(t, &Account{ID: "a", Concurrency: 1}, &Account{ID: "b", Concurrency: 1})
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5"}
	for range 2 {
		sel, err := f.s.Select(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer sel.Release()
	}
	_, err := f.s.Select(ctx, q)
	if !errors.Is(err, ErrAccountsBusy) {
		t.Fatalf("err %v, want ErrAccountsBusy", err)
	}
}

func TestTopKBoundsAttempts(t *testing.T) {
	for _, k := range []int{0, 3} {
		lim := new(countingLimiter)
		f := newFixture(t, accounts(20, func(int) *Account { return &Account{Concurrency: 1} })...)
		f.s.Limiter, f.s.TopK = lim, k
		_, err := f.s.Select(context.Background(), Request{Group: "g"})
		want := int32(knob.Or(k, defaultTopK))
		if !errors.Is(err, ErrAccountsBusy) || lim.tries.Load() != want {
			t.Fatalf("TopK %d: %d tries, err %v; want %d tries", k, lim.tries.Load(), err, want)
		}
	}
}
