package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// Interface checks: Memory is all three.
var (
	_ concurrency.SlotLimiter = (*concurrency.Memory)(nil)
	_ concurrency.Waiter      = (*concurrency.Memory)(nil)
	_ concurrency.Counter     = (*concurrency.Memory)(nil)
)

var bg = context.Background()

// waitUntil spins (yielding) until cond holds; it observes state, it does
// not guess at timing.
func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		runtime.Gosched()
	}
}

func mustTry(t *testing.T, l concurrency.SlotLimiter, key string, limit int) func() {
	t.Helper()
	release, ok, err := l.TryAcquire(bg, key, limit)
	if err != nil || !ok {
		t.Fatalf("TryAcquire(%q, %d) = ok %v, err %v; want a slot", key, limit, ok, err)
	}
	return release
}

func assertIdle(t *testing.T, m *concurrency.Memory) {
	t.Helper()
	if n := m.Total(); n != 0 {
		t.Errorf("Total = %d, want 0", n)
	}
	if n := m.Keys(); n != 0 {
		t.Errorf("Keys = %d, want 0: idle keys must be forgotten", n)
	}
}

func TestTryAcquireRespectsLimit(t *testing.T) {
	m := concurrency.NewMemory()
	r1 := mustTry(t, m, "u", 2)
	r2 := mustTry(t, m, "u", 2)
	if _, ok, err := m.TryAcquire(bg, "u", 2); ok || err != nil {
		t.Fatalf("third TryAcquire = ok %v, err %v; want refused without error", ok, err)
	}
	other := mustTry(t, m, "v", 2) // keys are independent
	if got := m.InFlight("u"); got != 2 {
		t.Fatalf("InFlight(u) = %d, want 2", got)
	}
	if got := m.Total(); got != 3 {
		t.Fatalf("Total = %d, want 3", got)
	}
	r1()
	r3 := mustTry(t, m, "u", 2)
	r2()
	r3()
	other()
	if got := m.InFlight("u"); got != 0 {
		t.Fatalf("InFlight(u) = %d, want 0", got)
	}
	assertIdle(t, m)
}

func TestZeroValueIsUsable(t *testing.T) {
	var m concurrency.Memory
	r := mustTry(t, &m, "k", 1)
	if _, ok, _ := m.TryAcquire(bg, "k", 1); ok {
		t.Fatal("second slot granted at limit 1")
	}
	r()
	rel, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{})
	if err != nil {
		t.Fatalf("Acquire on idle key: %v", err)
	}
	rel()
	assertIdle(t, &m)
}

func TestUnlimited(t *testing.T) {
	m := concurrency.NewMemory()
	for _, limit := range []int{0, -1} {
		var releases []func()
		for range 100 {
			releases = append(releases, mustTry(t, m, "k", limit))
			r, err := m.Acquire(bg, "k", limit, concurrency.WaitOptions{})
			if err != nil {
				t.Fatalf("Acquire with limit %d: %v", limit, err)
			}
			releases = append(releases, r)
		}
		if got := m.InFlight("k"); got != 0 {
			t.Fatalf("limit %d: InFlight = %d, want 0 (unlimited slots are not counted)", limit, got)
		}
		for _, r := range releases {
			r()
			r()
		}
	}
	assertIdle(t, m)
}

func TestDoubleReleaseFreesOneSlot(t *testing.T) {
	m := concurrency.NewMemory()
	a := mustTry(t, m, "k", 2)
	b := mustTry(t, m, "k", 2)
	a()
	a()
	if got := m.InFlight("k"); got != 1 {
		t.Fatalf("InFlight after double release = %d, want 1", got)
	}
	// A late call after the slot's bookkeeping was reused by a new grant
	// must not release the new holder.
	x := mustTry(t, m, "k", 2)
	a()
	if got := m.InFlight("k"); got != 2 {
		t.Fatalf("InFlight after a stale release = %d, want 2", got)
	}
	x()

	// With a waiter queued, a second call must not hand out a second slot.
	c := mustTry(t, m, "k", 2)
	got := make(chan func())
	go func() {
		r, err := m.Acquire(bg, "k", 2, concurrency.WaitOptions{MaxWaiters: 1})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitUntil(t, func() bool { return m.Waiting("k") == 1 })
	b()
	b()
	d := <-got
	if n := m.InFlight("k"); n != 2 {
		t.Fatalf("InFlight = %d, want 2 (c and the waiter)", n)
	}
	c()
	d()
	d()
	assertIdle(t, m)
}

func TestWaitersAreServedFIFO(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)

	type grant struct {
		i       int
		release func()
	}
	grants := make(chan grant)
	const n = 8
	for i := range n {
		go func() {
			r, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{MaxWaiters: n})
			if err != nil {
				t.Error(err)
				return
			}
			grants <- grant{i, r}
		}()
		// Enqueue one at a time so the queue order is known.
		waitUntil(t, func() bool { return m.Waiting("k") == i+1 })
	}

	hold()
	for want := range n {
		g := <-grants
		if g.i != want {
			t.Fatalf("grant %d went to waiter %d", want, g.i)
		}
		// The slot passed straight to g: nothing is free in between.
		if _, ok, _ := m.TryAcquire(bg, "k", 1); ok {
			t.Fatal("TryAcquire got a slot that belonged to a waiter")
		}
		g.release()
	}
	assertIdle(t, m)
}

func TestQueueFull(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)

	// A negative MaxWaiters: no waiting at all (0 is the default, see
	// TestZeroWaitOptionsQueueDefault).
	for _, max := range []int{-1, -5} {
		if _, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{MaxWaiters: max}); !errors.Is(err, concurrency.ErrQueueFull) {
			t.Fatalf("MaxWaiters %d: err = %v, want ErrQueueFull", max, err)
		}
	}

	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := m.Acquire(ctx, "k", 1, concurrency.WaitOptions{MaxWaiters: 2}); !errors.Is(err, context.Canceled) {
				t.Errorf("queued waiter: err = %v, want context.Canceled", err)
			}
		})
	}
	waitUntil(t, func() bool { return m.Waiting("k") == 2 })
	start := time.Now()
	if _, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{MaxWaiters: 2, Timeout: time.Minute}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Fatalf("third waiter: err = %v, want ErrQueueFull", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("ErrQueueFull took %v; it must be immediate", d)
	}
	cancel()
	wg.Wait()
	if got := m.Waiting("k"); got != 0 {
		t.Fatalf("Waiting = %d after cancel, want 0", got)
	}
	hold()
	assertIdle(t, m)
}

func TestWaitTimeout(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)
	start := time.Now()
	_, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: 20 * time.Millisecond})
	if !errors.Is(err, concurrency.ErrWaitTimeout) {
		t.Fatalf("err = %v, want ErrWaitTimeout", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("gave up after %v, before the 20ms timeout", d)
	}
	if got := m.Waiting("k"); got != 0 {
		t.Fatalf("Waiting = %d, want 0", got)
	}
	hold()
	assertIdle(t, m)
}

func TestContextEndsWait(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)

	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() {
		_, err := m.Acquire(ctx, "k", 1, concurrency.WaitOptions{MaxWaiters: 1})
		errc <- err
	}()
	waitUntil(t, func() bool { return m.Waiting("k") == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}

	dctx, dcancel := context.WithTimeout(bg, 10*time.Millisecond)
	defer dcancel()
	if _, err := m.Acquire(dctx, "k", 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: time.Minute}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded (the ctx deadline, not ErrWaitTimeout)", err)
	}
	hold()

	// An ended ctx fails even when a slot is free.
	if _, err := m.Acquire(ctx, "k", 1, concurrency.WaitOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a canceled ctx: err = %v, want context.Canceled", err)
	}
	assertIdle(t, m)
}

func TestCancelledHeadUnblocksSmallerLimitQueue(t *testing.T) {
	m := concurrency.NewMemory()
	// Two slots held under limit 3; the head waiter asks with limit 1, so it
	// blocks, and neither the waiter behind it (limit 3) nor a TryAcquire
	// may overtake it...
	a := mustTry(t, m, "k", 3)
	b := mustTry(t, m, "k", 3)
	ctx, cancel := context.WithCancel(bg)
	headErr := make(chan error, 1)
	go func() {
		_, err := m.Acquire(ctx, "k", 1, concurrency.WaitOptions{MaxWaiters: 2})
		headErr <- err
	}()
	waitUntil(t, func() bool { return m.Waiting("k") == 1 })
	second := make(chan func(), 1)
	go func() {
		r, err := m.Acquire(bg, "k", 3, concurrency.WaitOptions{MaxWaiters: 2})
		if err != nil {
			t.Error(err)
		}
		second <- r
	}()
	waitUntil(t, func() bool { return m.Waiting("k") == 2 })
	select {
	case <-second:
		t.Fatal("the second waiter overtook the head of the queue")
	default:
	}
	if _, ok, _ := m.TryAcquire(bg, "k", 3); ok {
		t.Fatal("TryAcquire overtook the queue")
	}
	// ...until the head leaves: then the free slot goes to the second.
	cancel()
	if err := <-headErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("head err = %v", err)
	}
	r := <-second
	if got := m.InFlight("k"); got != 3 {
		t.Fatalf("InFlight = %d, want 3", got)
	}
	a()
	b()
	r()
	assertIdle(t, m)
}

func TestManyKeysAreForgotten(t *testing.T) {
	m := concurrency.NewMemory()
	var releases []func()
	for i := range 1000 {
		releases = append(releases, mustTry(t, m, fmt.Sprint("key-", i), 1))
	}
	if got := m.Keys(); got != 1000 {
		t.Fatalf("Keys = %d, want 1000", got)
	}
	for _, r := range releases {
		r()
	}
	assertIdle(t, m)
}

func TestContentionNeverExceedsLimit(t *testing.T) {
	m := concurrency.NewMemory()
	const limit, workers, rounds = 3, 64, 200
	var inside, peak, granted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				var release func()
				if (w+i)%4 == 0 {
					r, ok, err := m.TryAcquire(bg, "hot", limit)
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						continue
					}
					release = r
				} else {
					r, err := m.Acquire(bg, "hot", limit, concurrency.WaitOptions{MaxWaiters: workers})
					if err != nil {
						t.Error(err)
						return
					}
					release = r
				}
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				if got := m.InFlight("hot"); got > limit {
					t.Errorf("InFlight = %d, over the limit %d", got, limit)
				}
				runtime.Gosched()
				inside.Add(-1)
				granted.Add(1)
				release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit || p < 1 {
		t.Fatalf("peak holders = %d, want 1..%d", p, limit)
	}
	if granted.Load() < workers*rounds*3/4 {
		t.Fatalf("only %d grants; every blocking Acquire must succeed", granted.Load())
	}
	assertIdle(t, m)
}
