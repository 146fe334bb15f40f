package concurrency

import (
	"context"
	"runtime"
	"testing"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestCancelWhileHandedSlot drives the race between a waiter giving up and
// a release handing it the slot: the slot must come back either way.
func TestCancelWhileHandedSlot(t *testing.T) {
	m := NewMemory()
	gaveBack := 0
	for range 200 {
		m.mu.Lock()
		holder := m.grantLocked(m.state("k"))
		m.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			release func()
			err     error
		}
		done := make(chan result, 1)
		go func() {
			r, err := m.Acquire(ctx, "k", 1, WaitOptions{MaxWaiters: 1})
			done <- result{r, err}
		}()
		for m.Waiting("k") != 1 {
			runtime.Gosched()
		}

		// Cancel and release the holder's slot (handing it to the waiter)
		// in one critical section, so the waiter sees both at once.
		m.mu.Lock()
		cancel()
		m.releaseLocked(holder)
		m.mu.Unlock()

		r := <-done
		if r.err != nil {
			gaveBack++
			if r.err != context.Canceled {
				t.Fatalf("err = %v, want context.Canceled", r.err)
			}
		} else {
			r.release()
		}
		if n := m.Total(); n != 0 {
			t.Fatalf("Total = %d after the round, want 0", n)
		}
		if n := m.Keys(); n != 0 {
			t.Fatalf("Keys = %d after the round, want 0", n)
		}
	}
	if gaveBack == 0 {
		t.Fatal("the give-back path never ran")
	}
}
