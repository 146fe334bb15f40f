// Package concurrency limits how many turns run at once per key (a user, an
// API key, an upstream account).
//
// A SlotLimiter hands out slots with TryAcquire. Limiters that can wait
// natively for a slot to free (the in-memory Memory, a Redis limiter with
// pub/sub wake-ups) also implement Waiter; Acquire uses it when present and
// falls back to polling TryAcquire otherwise.
//
// Memory is the in-process limiter: FIFO waiters handed a slot directly on
// release, a bounded queue per key, and no state kept for idle keys. Hosts
// running several relay processes supply their own SlotLimiter (Redis, SQL)
// so that a user's limit holds across all of them.
//
// Every release function returned by this package is idempotent: calling it
// twice releases one slot. Callers should still release exactly once, on a
// context detached from the request.
//
// # Example
//
//	limiter := concurrency.NewMemory()
//	release, err := concurrency.Acquire(ctx, limiter, "user:"+id, limit,
//		concurrency.WaitOptions{MaxWaiters: limit + 20, Timeout: 30 * time.Second})
//	if err != nil {
//		// ErrQueueFull or ErrWaitTimeout: answer 429. Otherwise ctx ended
//		// or the limiter's backend failed.
//		return err
//	}
//	defer release()
package concurrency

import (
	"context"
	"errors"
	"time"

	"github.com/relaykit/responsesrelay/internal/knob"
)

// SlotLimiter hands out at most limit concurrent slots per key.
//
// TryAcquire never waits: ok is false when the key already holds limit slots.
// err is set only when the limiter itself failed (a backend outage); the
// caller decides whether to fail open or closed. A limit <= 0 means
// unlimited: TryAcquire always succeeds and release is a no-op.
type SlotLimiter interface {
	TryAcquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error)
}

// Waiter is implemented by limiters that can wait for a slot without polling.
//
// Acquire blocks until a slot for key is free, ctx is done, or o.Timeout
// passes. It returns ErrQueueFull at once when o.MaxWaiters callers are
// already waiting for key, ErrWaitTimeout when the timeout passed, and
// ctx.Err() when ctx ended first. Waiters are served first in, first out.
// A zero field of o takes the implementation's documented default.
type Waiter interface {
	Acquire(ctx context.Context, key string, limit int, o WaitOptions) (release func(), err error)
}

// WaitOptions bound a wait for a slot. A zero field takes the default of
// whoever holds the options (Acquire and Memory: 100 waiters, 30 s; each
// field that holds a WaitOptions documents its own); a negative one turns
// the bound off as the field says.
type WaitOptions struct {
	// MaxWaiters is how many callers may wait for one key at once; the next
	// one gets ErrQueueFull. Negative: no queue, a full key is ErrQueueFull
	// at once.
	MaxWaiters int
	// Timeout is how long one caller waits before ErrWaitTimeout. Negative:
	// until ctx is done.
	Timeout time.Duration
}

// Defaults of Acquire and Memory for the zero fields of WaitOptions.
const (
	defaultMaxWaiters  = 100
	defaultWaitTimeout = 30 * time.Second
)

// resolve returns the queue bound (0: no queue) and the timeout (0: none)
// that o asks for.
func (o WaitOptions) resolve() (maxWaiters int, timeout time.Duration) {
	return max(knob.Or(o.MaxWaiters, defaultMaxWaiters), 0), max(knob.Or(o.Timeout, defaultWaitTimeout), 0)
}

var (
	// ErrQueueFull means the wait queue for the key is full.
	ErrQueueFull = errors.New("concurrency: wait queue full")
	// ErrWaitTimeout means no slot freed within WaitOptions.Timeout.
	ErrWaitTimeout = errors.New("concurrency: timed out waiting for a slot")
)

// Counter is implemented by limiters that can report how many slots a key
// holds right now (tests and metrics use it to prove that every slot came
// back).
type Counter interface {
	InFlight(key string) int
}
