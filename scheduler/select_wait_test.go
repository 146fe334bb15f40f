package scheduler

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

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
	if n := accountSlots(lim, "a", "b"); n != 0 {
		t.Fatalf("%d slots left", n)
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
	f.s.rand = nil // the default source is safe for concurrent use
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
	for _, a := range accts {
		if n := accountSlots(lim, a.ID); n != 0 {
			t.Errorf("limiter holds %d slots of %s", n, a.ID)
		}
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
