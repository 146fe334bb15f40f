package scheduler

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
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

func TestSelectNoAccount(t *testing.T) {
	ctx := context.Background()
	t.Run("empty group", func(t *testing.T) {
		f := newFixture(t)
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonNoAccounts || !strings.Contains(err.Error(), `"g"`) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("model", func(t *testing.T) {
		f := newFixture(t, &Account{ID: "a", Models: []string{"gpt-4*"}}, &Account{ID: "b", Models: []string{"o3"}})
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonModel || na.Total != 2 || na.Eligible != 0 || !strings.Contains(err.Error(), "gpt-5") {
			t.Fatalf("err %v (%+v)", err, na)
		}
	})
	t.Run("transport", func(t *testing.T) {
		f := newFixture(t, acct("a"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Transport: TransportWebSocket})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonModel || !strings.Contains(err.Error(), "WebSocket") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("cooling down", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"), &Account{ID: "other", Models: []string{"o3"}})
		f.s.Observe("a", status(429, "", "Retry-After", "30"))
		f.s.Observe("b", status(429, "", "Retry-After", "7"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5"})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonCoolingDown || na.Eligible != 2 || na.Total != 3 ||
			!na.Until.Equal(f.clock.Now().Add(7*time.Second)) {
			t.Fatalf("err %v (%+v)", err, na)
		}
		if !strings.Contains(err.Error(), "12:00:07") {
			t.Fatalf("message %q does not say when", err)
		}
	})
	t.Run("excluded", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Exclude: []string{"a", "b"}})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonExcluded || na.Eligible != 2 {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("excluded and cooling", func(t *testing.T) {
		f := newFixture(t, acct("a"), acct("b"))
		f.s.Observe("b", status(401, "{}"))
		_, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Exclude: []string{"a"}})
		var na *NoAccountError
		if !errors.As(err, &na) || na.Reason != ReasonCoolingDown || !na.Until.Equal(f.clock.Now().Add(10*time.Minute)) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestSelectPreviousResponseBinding(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k"}
	if err := f.s.Bind(ctx, q, "b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	q.PreviousResponseID = "resp_1"
	for range 30 {
		sel, err := f.s.Select(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		sel.Release()
		if sel.Account.ID != "b" || sel.Layer != LayerPreviousResponse {
			t.Fatalf("got %s via %s, want b via previous_response", sel.Account.ID, sel.Layer)
		}
	}
	q.PreviousResponseID = "resp_unknown"
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("unknown id: %+v, %v", sel, err)
	}
	sel.Release()

	// The binding lives StickyTTL after Bind.
	f.clock.Advance(time.Hour - time.Second)
	q.PreviousResponseID = "resp_1"
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerPreviousResponse {
		t.Fatalf("binding gone before its TTL: %s", sel.Layer)
	} else {
		sel.Release()
	}
	f.clock.Advance(time.Second)
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerBalanced {
		t.Fatalf("binding outlived its TTL: %s", sel.Layer)
	} else {
		sel.Release()
	}
}

func TestSelectSessionBinding(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k1", SessionKey: "sess-1"}
	if err := f.s.Bind(ctx, q, "c", ""); err != nil {
		t.Fatal(err)
	}
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "c" || sel.Layer != LayerSession {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()

	// Another tenant with the same session key does not share the binding.
	other := q
	other.APIKeyID = "k2"
	if sel, _ := f.s.Select(ctx, other); sel.Layer != LayerBalanced {
		t.Fatalf("tenant k2 used k1's binding")
	} else {
		sel.Release()
	}

	// Binding on every served turn keeps the session alive past one TTL.
	for range 3 {
		f.clock.Advance(50 * time.Minute)
		sel, err := f.s.Select(ctx, q)
		if err != nil || sel.Layer != LayerSession {
			t.Fatalf("session expired while in use: %+v, %v", sel, err)
		}
		if err := f.s.Bind(ctx, q, sel.Account.ID, ""); err != nil {
			t.Fatal(err)
		}
		sel.Release()
	}
	f.clock.Advance(time.Hour)
	if sel, _ := f.s.Select(ctx, q); sel.Layer != LayerBalanced {
		t.Fatalf("idle session outlived its TTL")
	} else {
		sel.Release()
	}
}

func TestSessionKeysDoNotCollide(t *testing.T) {
	if sessionKey("a:b", "c") == sessionKey("a", "b:c") {
		t.Fatal("API key a:b with session c shares a key with API key a with session b:c")
	}
	if sessionKey("", "x") == sessionKey("x", "") {
		t.Fatal("empty parts collide")
	}
}

func TestPreviousResponseBeforeSession(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"), acct("c"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", SessionKey: "s"}
	if err := f.s.Bind(ctx, q, "c", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Bind(ctx, Request{}, "b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	q.PreviousResponseID = "resp_1"
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "b" || sel.Layer != LayerPreviousResponse {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()

	// b cooling: the session's account takes over.
	f.s.Observe("b", status(429, "", "Retry-After", "7"))
	sel, err = f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "c" || sel.Layer != LayerSession {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()
}

// TestStickyEscape covers every reason to leave a bound account, on both
// sticky layers.
func TestStickyEscape(t *testing.T) {
	tests := []struct {
		name   string
		reason string // in the debug log
		setup  func(t *testing.T, f *fixture, q *Request)
	}{
		{"cooling down", "cooling down", func(t *testing.T, f *fixture, q *Request) {
			f.s.Observe("a", status(429, "", "Retry-After", "7"))
		}},
		{"failing", "failing", func(t *testing.T, f *fixture, q *Request) {
			// Failures with successes between: an error rate of 0.544 and
			// never three in a row, so no cooldown hides the condition.
			for _, ok := range []bool{false, false, true, false, false} {
				o := status(502, "")
				if ok {
					o = Outcome{Kind: OutcomeSuccess}
				}
				f.s.Observe("a", o)
			}
			if !f.s.CoolingUntil("a").IsZero() {
				t.Fatal("setup: a is cooling down")
			}
		}},
		{"slow", "slow", func(t *testing.T, f *fixture, q *Request) {
			f.s.Observe("a", Outcome{Kind: OutcomeSuccess, TTFT: 16 * time.Second})
		}},
		{"full", "full", func(t *testing.T, f *fixture, q *Request) {
			hold := *q
			hold.PreviousResponseID, hold.SessionKey = "", ""
			hold.Exclude = []string{"b", "c"}
			sel, err := f.s.Select(context.Background(), hold)
			if err != nil || sel.Account.ID != "a" {
				t.Fatalf("setup: %+v, %v", sel, err)
			}
			t.Cleanup(sel.Release)
		}},
		{"excluded", "failed earlier", func(t *testing.T, f *fixture, q *Request) {
			q.Exclude = []string{"a"}
		}},
		{"gone from the group", "not in the group", func(t *testing.T, f *fixture, q *Request) {
			if !f.pool.Remove("g", "a") {
				t.Fatal("setup: a not removed")
			}
		}},
		{"no longer serves the model", "does not serve", func(t *testing.T, f *fixture, q *Request) {
			f.pool.Add("g", &Account{ID: "a", Concurrency: 1, Models: []string{"gpt-4o"}})
		}},
		{"no websocket", "WebSocket", func(t *testing.T, f *fixture, q *Request) {
			q.Transport = TransportWebSocket
		}},
	}
	for _, layer := range []Layer{LayerPreviousResponse, LayerSession} {
		for _, tt := range tests {
			t.Run(string(layer)+"/"+tt.name, func(t *testing.T) {
				f := newFixture(t,
					&Account{ID: "a", Concurrency: 1},
					&Account{ID: "b", Concurrency: 1, WebSocket: true},
					&Account{ID: "c", Concurrency: 1, WebSocket: true})
				ctx := context.Background()
				q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k"}
				if layer == LayerPreviousResponse {
					q.PreviousResponseID = "resp_1"
					if err := f.s.Bind(ctx, q, "a", "resp_1"); err != nil {
						t.Fatal(err)
					}
				} else {
					q.SessionKey = "s"
					if err := f.s.Bind(ctx, q, "a", ""); err != nil {
						t.Fatal(err)
					}
				}
				// The binding works before the condition.
				if sel, err := f.s.Select(ctx, q); err != nil || sel.Account.ID != "a" || sel.Layer != layer {
					t.Fatalf("before: %+v, %v", sel, err)
				} else {
					sel.Release()
				}

				tt.setup(t, f, &q)
				for range 20 {
					sel, err := f.s.Select(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					sel.Release()
					if sel.Account.ID == "a" || sel.Layer != LayerBalanced {
						t.Fatalf("got %s via %s, want another account via balanced", sel.Account.ID, sel.Layer)
					}
				}
				if !strings.Contains(f.logs.String(), tt.reason) {
					t.Fatalf("debug log does not say %q: %s", tt.reason, f.logs.String())
				}
			})
		}
	}
}

func TestStickyBindingMoves(t *testing.T) {
	f := newFixture(t, acct("a"), acct("b"))
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", SessionKey: "s"}
	if err := f.s.Bind(ctx, q, "a", ""); err != nil {
		t.Fatal(err)
	}
	f.s.Observe("a", status(401, "{}"))
	sel, err := f.s.Select(ctx, q)
	if err != nil || sel.Account.ID != "b" {
		t.Fatalf("got %+v, %v", sel, err)
	}
	if err := f.s.Bind(ctx, q, sel.Account.ID, "resp_2"); err != nil {
		t.Fatal(err)
	}
	sel.Release()

	// a is back, but the session now lives on b.
	f.s.Recover("a")
	for range 20 {
		sel, err := f.s.Select(ctx, q)
		if err != nil || sel.Account.ID != "b" || sel.Layer != LayerSession {
			t.Fatalf("got %+v, %v", sel, err)
		}
		sel.Release()
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
		sel, err := f.s.Select(ctx, Request{Group: "g", Model: "gpt-5", Transport: TransportWebSocket})
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

func TestSelectionReleaseIdempotent(t *testing.T) {
	lim := concurrency.NewMemory()
	f := newFixture(t, acct("a"))
	f.s.Limiter = lim
	sel, err := f.s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if f.s.InFlight("a") != 1 || lim.InFlight("account:a") != 1 {
		t.Fatalf("in flight %d / limiter %d", f.s.InFlight("a"), lim.InFlight("account:a"))
	}
	sel2, err := f.s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	sel.Release()
	sel.Release()
	if f.s.InFlight("a") != 1 || lim.InFlight("account:a") != 1 {
		t.Fatalf("double release freed two slots: %d / %d", f.s.InFlight("a"), lim.InFlight("account:a"))
	}
	sel2.Release()
	if f.s.InFlight("a") != 0 || lim.Total() != 0 {
		t.Fatalf("slots left: %d / %d", f.s.InFlight("a"), lim.Total())
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

// waitingLimiter announces every Acquire call of a wrapped Memory.
type waitingLimiter struct {
	*concurrency.Memory
	entered chan string
}

func (l *waitingLimiter) Acquire(ctx context.Context, key string, limit int, o concurrency.WaitOptions) (func(), error) {
	l.entered <- key
	return l.Memory.Acquire(ctx, key, limit, o)
}

func TestSelectWaitsForBestAccount(t *testing.T) {
	lim := &waitingLimiter{Memory: concurrency.NewMemory(), entered: make(chan string, 1)}
	f := newFixture(t, &Account{ID: "a", Concurrency: 1}, &Account{ID: "b", Concurrency: 1, Priority: 1})
	f.s.Limiter = lim
	ctx := context.Background()
	q := Request{Group: "g", Model: "gpt-5", Wait: true}
	var held []*Selection
	for range 2 {
		sel, err := f.s.Select(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, sel)
	}

	type result struct {
		sel *Selection
		err error
	}
	done := make(chan result, 1)
	go func() {
		sel, err := f.s.Select(ctx, q)
		done <- result{sel, err}
	}()
	if key := <-lim.entered; key != "account:a" {
		t.Fatalf("waits on %s, want the preferred account a", key)
	}
	select {
	case r := <-done:
		t.Fatalf("returned while every account was full: %+v", r)
	default:
	}
	held[1].Release() // b frees, but the waiter queued on a
	held[0].Release()
	r := <-done
	if r.err != nil || r.sel.Account.ID != "a" {
		t.Fatalf("got %+v, %v", r.sel, r.err)
	}
	r.sel.Release()
	if lim.Total() != 0 {
		t.Fatalf("%d slots left", lim.Total())
	}
}

func TestSelectWaitErrors(t *testing.T) {
	setup := func(t *testing.T, wait concurrency.WaitOptions) (*fixture, func()) {
		f := newFixture(t, &Account{ID: "a", Concurrency: 1})
		f.s.AccountWait = wait
		sel, err := f.s.Select(context.Background(), Request{Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		return f, sel.Release
	}
	q := Request{Group: "g", Wait: true}

	t.Run("queue full", func(t *testing.T) {
		f, release := setup(t, concurrency.WaitOptions{MaxWaiters: -1})
		defer release()
		_, err := f.s.Select(context.Background(), q)
		if !errors.Is(err, concurrency.ErrQueueFull) || !strings.Contains(err.Error(), "account a") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f, release := setup(t, concurrency.WaitOptions{Timeout: time.Millisecond})
		defer release()
		_, err := f.s.Select(context.Background(), q)
		if !errors.Is(err, concurrency.ErrWaitTimeout) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("context", func(t *testing.T) {
		f, release := setup(t, concurrency.WaitOptions{})
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := f.s.Select(ctx, q)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	})
}

// TestSelectConcurrencyLimit hammers Select from many goroutines and checks
// that no account ever runs more turns than its Concurrency.
func TestSelectConcurrencyLimit(t *testing.T) {
	accts := []*Account{
		{ID: "a", Concurrency: 2, Weight: 1},
		{ID: "b", Concurrency: 3, Weight: 2},
		{ID: "c", Concurrency: 4, Weight: 1, Priority: 1},
	}
	lim := concurrency.NewMemory()
	f := newFixture(t, accts...)
	f.s.Limiter = lim
	f.s.Rand = nil // the default source is safe for concurrent use
	running := map[string]*atomic.Int32{}
	for _, a := range accts {
		running[a.ID] = new(atomic.Int32)
	}

	const workers, turns = 24, 200
	var (
		wg       sync.WaitGroup
		served   atomic.Int64
		failures = make(chan string, workers)
	)
	for w := range workers {
		wg.Go(func() {
			q := Request{Group: "g", Model: "gpt-5", APIKeyID: "k", Wait: true}
			if w%3 == 0 {
				q.SessionKey = fmt.Sprint("s", w) // sticky and balanced paths mixed
			}
			for range turns {
				sel, err := f.s.Select(context.Background(), q)
				if err != nil {
					failures <- err.Error()
					return
				}
				n := running[sel.Account.ID].Add(1)
				if int(n) > sel.Account.Concurrency {
					failures <- fmt.Sprintf("%s runs %d turns, limit %d", sel.Account.ID, n, sel.Account.Concurrency)
				}
				if q.SessionKey != "" {
					_ = f.s.Bind(context.Background(), q, sel.Account.ID, "")
				}
				runtime.Gosched()
				running[sel.Account.ID].Add(-1)
				sel.Release()
				served.Add(1)
			}
		})
	}
	wg.Wait()
	close(failures)
	for msg := range failures {
		t.Error(msg)
	}
	if served.Load() != workers*turns {
		t.Fatalf("served %d turns, want %d", served.Load(), workers*turns)
	}
	for _, a := range accts {
		if n := f.s.InFlight(a.ID); n != 0 {
			t.Errorf("InFlight(%s) = %d after all released", a.ID, n)
		}
	}
	if lim.Total() != 0 {
		t.Errorf("limiter holds %d slots", lim.Total())
	}
}

// countingLimiter reports every account full and counts the attempts.
type countingLimiter struct {
	tries atomic.Int32
	err   error
}

func (l *countingLimiter) TryAcquire(context.Context, string, int) (func(), bool, error) {
	l.tries.Add(1)
	return nil, false, l.err
}

func TestTopKBoundsAttempts(t *testing.T) {
	for _, k := range []int{0, 3} {
		lim := new(countingLimiter)
		f := newFixture(t, accounts(20, func(int) *Account { return &Account{Concurrency: 1} })...)
		f.s.Limiter, f.s.TopK = lim, k
		_, err := f.s.Select(context.Background(), Request{Group: "g"})
		want := int32(cmpOr(k, DefaultTopK))
		if !errors.Is(err, ErrAccountsBusy) || lim.tries.Load() != want {
			t.Fatalf("TopK %d: %d tries, err %v; want %d tries", k, lim.tries.Load(), err, want)
		}
	}
}

func TestSelectLimiterError(t *testing.T) {
	boom := errors.New("redis: connection refused")
	f := newFixture(t, acct("a"))
	f.s.Limiter = &countingLimiter{err: boom}
	_, err := f.s.Select(context.Background(), Request{Group: "g"})
	if !errors.Is(err, boom) || !errors.Is(err, ErrLimiter) {
		t.Fatalf("err %v, want the limiter's, marked ErrLimiter", err)
	}
}

type failingPool struct{ err error }

func (p failingPool) Accounts(context.Context, string) ([]*Account, error) { return nil, p.err }

// failingStore fails every call.
type failingStore struct{ err error }

func (s failingStore) Get(context.Context, string) (string, bool, error) { return "", false, s.err }
func (s failingStore) Set(context.Context, string, string, time.Duration) error {
	return s.err
}
func (s failingStore) Delete(context.Context, string) error { return s.err }

func TestSelectErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := new(Scheduler).Select(ctx, Request{}); err == nil || !strings.Contains(err.Error(), "Pool") {
		t.Fatalf("nil Pool: %v", err)
	}
	boom := errors.New("db down")
	s := &Scheduler{Pool: failingPool{boom}}
	if _, err := s.Select(ctx, Request{Group: "g"}); !errors.Is(err, boom) {
		t.Fatalf("pool error: %v", err)
	}

	// A broken store costs stickiness, not the turn.
	f := newFixture(t, acct("a"))
	f.s.Store = failingStore{errors.New("store down")}
	sel, err := f.s.Select(ctx, Request{Group: "g", PreviousResponseID: "resp_1", SessionKey: "s"})
	if err != nil || sel.Layer != LayerBalanced {
		t.Fatalf("got %+v, %v", sel, err)
	}
	sel.Release()
	if !strings.Contains(f.logs.String(), "store down") {
		t.Fatalf("store failure not logged: %s", f.logs.String())
	}
	err = f.s.Bind(ctx, Request{SessionKey: "s"}, "a", "resp_1")
	if err == nil || !strings.Contains(err.Error(), "resp_1") || !strings.Contains(err.Error(), "session") {
		t.Fatalf("Bind: %v", err)
	}
	if err := f.s.Bind(ctx, Request{}, "", "resp_1"); err == nil {
		t.Fatal("Bind without an account ID succeeded")
	}
}

func TestSelectFollowsPoolChanges(t *testing.T) {
	f := newFixture(t, acct("a"))
	q := Request{Group: "g", Model: "gpt-5"}
	if id := f.pick(t, q); id != "a" {
		t.Fatalf("picked %s", id)
	}
	f.pool.Set("g", []*Account{acct("b")})
	for range 10 {
		if id := f.pick(t, q); id != "b" {
			t.Fatalf("picked %s after the pool changed", id)
		}
	}
	// A changed account is a new pointer; its new limits apply.
	f.pool.Set("g", []*Account{{ID: "b", Models: []string{"o3"}}})
	if _, err := f.s.Select(context.Background(), q); err == nil {
		t.Fatal("selected an account that no longer serves the model")
	}
}

// copyingPool returns a fresh copy of its slice on every call.
type copyingPool struct{ accts []*Account }

func (p copyingPool) Accounts(context.Context, string) ([]*Account, error) {
	return slices.Clone(p.accts), nil
}

func TestViewReusedForSamePointers(t *testing.T) {
	accts := []*Account{acct("a"), acct("b")}
	s := &Scheduler{Pool: copyingPool{accts}}
	s.init()
	v1 := s.view("g", slices.Clone(accts))
	v2 := s.view("g", slices.Clone(accts))
	if v1 != v2 {
		t.Fatal("view rebuilt for the same accounts")
	}
	changed := []*Account{accts[0], acct("b")}
	if v3 := s.view("g", changed); v3 == v1 || v3.slots[1].acct != changed[1] {
		t.Fatal("view not rebuilt for a new *Account")
	}
	sel, err := s.Select(context.Background(), Request{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	sel.Release()
}

func TestStatsPruned(t *testing.T) {
	f := newFixture(t, acct("a"))
	f.s.init()
	for i := range 3000 {
		f.s.Observe(fmt.Sprint("gone", i), Outcome{Kind: OutcomeSuccess})
	}
	f.s.Observe("cooling", status(401, "{}"))
	if n := f.s.naccts.Load(); n != 3001 {
		t.Fatalf("%d records, want 3001", n)
	}
	f.pool.Set("g", []*Account{acct("a"), acct("b")}) // a rebuild prunes
	f.pick(t, Request{Group: "g"})
	if n := f.s.naccts.Load(); n != 3 {
		t.Fatalf("%d records after pruning, want a, b and the cooling one", n)
	}
	if f.s.CoolingUntil("cooling").IsZero() {
		t.Fatal("pruning dropped a cooldown")
	}
}

func TestTransportString(t *testing.T) {
	if TransportHTTP.String() != "http" || TransportWebSocket.String() != "ws" || Transport(9).String() != "Transport(9)" {
		t.Fatal(TransportHTTP.String(), TransportWebSocket.String())
	}
}

func TestViewCacheBounded(t *testing.T) {
	p := NewStaticPool()
	s := &Scheduler{Pool: p}
	for i := range maxViews + 10 {
		g := fmt.Sprint("g", i)
		p.Add(g, acct("a"))
		sel, err := s.Select(context.Background(), Request{Group: g})
		if err != nil {
			t.Fatal(err)
		}
		sel.Release()
		if n := s.nviews.Load(); n > maxViews {
			t.Fatalf("%d cached views", n)
		}
	}
	if _, ok := s.views.Load(fmt.Sprint("g", maxViews+9)); !ok {
		t.Fatal("the group just used is not cached")
	}
}

// TestPreviousResponseWaitsWhenFull: the account holding a previous
// response is waited for when it is only full; other accounts are not tried.
func TestPreviousResponseWaitsWhenFull(t *testing.T) {
	pool := NewStaticPool()
	pool.Add("g", &Account{ID: "a", Concurrency: 1})
	pool.Add("g", &Account{ID: "b", Concurrency: 1})
	s := &Scheduler{Pool: pool}
	ctx := context.Background()
	q := Request{Group: "g", Model: "m", PreviousResponseID: "resp_1", Wait: true}
	if err := s.Bind(ctx, q, "a", "resp_1"); err != nil {
		t.Fatal(err)
	}
	first, err := s.Select(ctx, q)
	if err != nil || first.Account.ID != "a" {
		t.Fatalf("first: %v %v", first, err)
	}
	got := make(chan *Selection, 1)
	go func() {
		sel, err := s.Select(ctx, q)
		if err != nil {
			t.Error(err)
		}
		got <- sel
	}()
	mem := s.limiter.(*concurrency.Memory)
	for mem.Waiting("account:a") != 1 {
		runtime.Gosched()
	}
	first.Release()
	sel := <-got
	if sel == nil || sel.Account.ID != "a" || sel.Layer != LayerPreviousResponse {
		t.Fatalf("second: %+v", sel)
	}
	sel.Release()
}
