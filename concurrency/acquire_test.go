package concurrency_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// pollOnly hides Memory's Waiter so that Acquire has to poll, and counts
// the polls.
type pollOnly struct {
	m     *concurrency.Memory
	tries atomic.Int64
	fail  error
}

func (p *pollOnly) TryAcquire(ctx context.Context, key string, limit int) (func(), bool, error) {
	p.tries.Add(1)
	if p.fail != nil {
		return nil, false, p.fail
	}
	return p.m.TryAcquire(ctx, key, limit)
}

func TestAcquireUsesWaiter(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)
	got := make(chan func())
	go func() {
		r, err := concurrency.Acquire(bg, m, "k", 1, concurrency.WaitOptions{MaxWaiters: 1})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	// Only a native wait shows up in Memory's queue.
	waitUntil(t, func() bool { return m.Waiting("k") == 1 })
	hold()
	(<-got)()
	assertIdle(t, m)
}

func TestAcquirePollsWithoutWaiter(t *testing.T) {
	p := &pollOnly{m: concurrency.NewMemory()}
	hold := mustTry(t, p.m, "k", 1)
	got := make(chan func())
	go func() {
		r, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: 5 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitUntil(t, func() bool { return p.tries.Load() >= 2 })
	hold()
	r := <-got
	if n := p.m.InFlight("k"); n != 1 {
		t.Fatalf("InFlight = %d, want 1", n)
	}
	r()
	assertIdle(t, p.m)
}

func TestAcquirePollingQueueFullAndTimeout(t *testing.T) {
	p := &pollOnly{m: concurrency.NewMemory()}
	hold := mustTry(t, p.m, "k", 1)
	defer hold()

	if _, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: -1}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Fatalf("MaxWaiters -1: err = %v, want ErrQueueFull", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: 1, Timeout: 300 * time.Millisecond})
		errc <- err
	}()
	waitUntil(t, func() bool { return p.tries.Load() >= 3 }) // polling: it holds the only queue place
	if _, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: 1}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Fatalf("second poller: err = %v, want ErrQueueFull", err)
	}
	// Another key has its own queue.
	r, err := concurrency.Acquire(bg, p, "other", 1, concurrency.WaitOptions{MaxWaiters: 1})
	if err != nil {
		t.Fatalf("other key: %v", err)
	}
	r()
	if err := <-errc; !errors.Is(err, concurrency.ErrWaitTimeout) {
		t.Fatalf("err = %v, want ErrWaitTimeout", err)
	}
}

func TestAcquirePollingContext(t *testing.T) {
	p := &pollOnly{m: concurrency.NewMemory()}
	hold := mustTry(t, p.m, "k", 1)
	defer hold()
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() {
		_, err := concurrency.Acquire(ctx, p, "k", 1, concurrency.WaitOptions{MaxWaiters: 1})
		errc <- err
	}()
	waitUntil(t, func() bool { return p.tries.Load() >= 2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestAcquireWrapsBackendError(t *testing.T) {
	outage := errors.New("redis: connection refused")
	p := &pollOnly{m: concurrency.NewMemory(), fail: outage}
	_, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: 1})
	if !errors.Is(err, outage) {
		t.Fatalf("err = %v, want it to wrap the backend error", err)
	}
	if errors.Is(err, concurrency.ErrQueueFull) || errors.Is(err, concurrency.ErrWaitTimeout) {
		t.Fatalf("a backend error must not look like a full queue: %v", err)
	}
}

func TestAcquireUnlimitedSkipsLimiter(t *testing.T) {
	p := &pollOnly{m: concurrency.NewMemory(), fail: errors.New("down")}
	r, err := concurrency.Acquire(bg, p, "k", 0, concurrency.WaitOptions{})
	if err != nil {
		t.Fatalf("limit 0: %v", err)
	}
	r()
	if n := p.tries.Load(); n != 0 {
		t.Fatalf("limiter asked %d times for an unlimited key", n)
	}
}
