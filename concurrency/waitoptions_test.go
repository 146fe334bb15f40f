package concurrency_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/concurrency"
)

// The zero WaitOptions queues up to 100 waiters per key; the 101st is
// turned away. A negative MaxWaiters queues nobody.
func TestZeroWaitOptionsQueueDefault(t *testing.T) {
	m := concurrency.NewMemory()
	hold := mustTry(t, m, "k", 1)
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Acquire(ctx, "k", 1, concurrency.WaitOptions{})
			errs <- err
		}()
	}
	waitUntil(t, func() bool { return m.Waiting("k") == 100 })
	if _, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Errorf("101st waiter: err = %v, want ErrQueueFull", err)
	}
	if _, err := m.Acquire(bg, "k", 1, concurrency.WaitOptions{MaxWaiters: -1, Timeout: -1}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Errorf("MaxWaiters -1: err = %v, want ErrQueueFull", err)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("waiter: err = %v, want context.Canceled", err)
		}
	}
	hold()
	assertIdle(t, m)
}

// Polling Acquire reads the zero MaxWaiters as the default too, and a
// negative Timeout waits until ctx ends.
func TestPollingZeroAndNegativeWaitOptions(t *testing.T) {
	p := &pollOnly{m: concurrency.NewMemory()}
	hold := mustTry(t, p.m, "k", 1)
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() {
		_, err := concurrency.Acquire(ctx, p, "k", 1, concurrency.WaitOptions{Timeout: -1})
		errc <- err
	}()
	waitUntil(t, func() bool { return p.tries.Load() >= 2 }) // queued and polling
	if _, err := concurrency.Acquire(bg, p, "k", 1, concurrency.WaitOptions{MaxWaiters: -1}); !errors.Is(err, concurrency.ErrQueueFull) {
		t.Errorf("MaxWaiters -1: err = %v, want ErrQueueFull", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("poller: err = %v, want context.Canceled", err)
	}
	hold()
	assertIdle(t, p.m)
}
