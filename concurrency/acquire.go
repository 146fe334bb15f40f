package concurrency

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"
)

// Polling backoff for limiters that cannot wait natively.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 200 * time.Millisecond
)

// Acquire takes a slot for key from l, waiting as o allows. It calls
// l.Acquire when l implements Waiter; otherwise it polls l.TryAcquire,
// backing off from 10 ms to 200 ms, which serves waiters in no particular
// order.
//
// A zero field of o takes its default: 100 waiters, 30 s; see WaitOptions
// for negative ones. When polling, o.MaxWaiters counts only the callers of this function in
// this process that are polling the same limiter and key, so the bound is
// approximate for a limiter shared by several processes. o.Timeout is
// honored to within one TryAcquire call.
//
// Errors are ErrQueueFull, ErrWaitTimeout, ctx.Err(), or a TryAcquire
// failure wrapped with the key (errors.Is and errors.As see through it).
// A limit <= 0 returns a no-op release without asking l.
func Acquire(ctx context.Context, l SlotLimiter, key string, limit int, o WaitOptions) (release func(), err error) {
	if limit <= 0 {
		return noop, nil
	}
	if w, ok := l.(Waiter); ok {
		return w.Acquire(ctx, key, limit, o)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	release, ok, err := l.TryAcquire(ctx, key, limit)
	if err != nil {
		return nil, fmt.Errorf("concurrency: acquire %q: %w", key, err)
	}
	if ok {
		return release, nil
	}

	pk := pollKey{key: key}
	if reflect.ValueOf(l).Comparable() {
		pk.limiter = l
	}
	maxWaiters, timeout := o.resolve()
	if !pollers.join(pk, maxWaiters) {
		return nil, ErrQueueFull
	}
	defer pollers.leave(pk)

	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	// Stopped until the first Reset; since Go 1.23 a stopped timer's channel
	// holds no stale tick.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for delay := pollFirst; ; delay = min(2*delay, pollMax) {
		wait := delay
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, ErrWaitTimeout
			}
			wait = min(wait, left)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		release, ok, err := l.TryAcquire(ctx, key, limit)
		if err != nil {
			return nil, fmt.Errorf("concurrency: acquire %q: %w", key, err)
		}
		if ok {
			return release, nil
		}
	}
}

// pollKey names one wait queue of a polling limiter. limiter is nil when
// the limiter's type cannot be a map key; such limiters share queues by key.
type pollKey struct {
	limiter SlotLimiter
	key     string
}

// pollCounts counts the callers polling each key, to bound the queue.
type pollCounts struct {
	mu sync.Mutex
	n  map[pollKey]int
}

var pollers pollCounts

func (p *pollCounts) join(k pollKey, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[k] >= max {
		return false
	}
	if p.n == nil {
		p.n = make(map[pollKey]int)
	}
	p.n[k]++
	return true
}

func (p *pollCounts) leave(k pollKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[k]--; p.n[k] <= 0 {
		delete(p.n, k)
	}
}
