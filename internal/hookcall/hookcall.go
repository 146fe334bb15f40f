// Package hookcall calls host code (hooks, stores, sinks) so that a panic
// in it becomes an error and a call that does not return in time is left
// behind instead of holding the caller.
package hookcall

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrTimeout is Bounded's answer when fn did not return within its timeout.
var ErrTimeout = errors.New("responsesrelay: host hook did not return in time")

// PanicError is a panic recovered from host code.
type PanicError struct{ Value any }

func (e *PanicError) Error() string { return fmt.Sprintf("responsesrelay: hook panicked: %v", e.Value) }

// Safe calls fn(ctx) on the caller's goroutine and returns a panic in it as
// a *PanicError.
func Safe(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p}
		}
	}()
	return fn(ctx)
}

// Bounded runs fn on its own goroutine, with a context that ends after
// timeout (<= 0: only when ctx does), and waits until fn returns, ctx ends
// or the timeout passes. It returns fn's error (a panic as *PanicError),
// or, when it stopped waiting first, ErrTimeout or ctx.Err(). fn then
// runs on abandoned, with its context already ended; late, if set, gets
// its result once it returns, e.g. to log a late panic or undo what it
// took.
func Bounded(ctx context.Context, timeout time.Duration, fn func(context.Context) error, late func(error)) error {
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		hctx, cancel = context.WithTimeout(ctx, timeout)
	}
	c := &call{done: make(chan error, 1)}
	go func() {
		err := Safe(hctx, fn)
		cancel()
		c.mu.Lock()
		abandoned := c.abandoned
		c.finished = true
		c.mu.Unlock()
		if !abandoned {
			c.done <- err
			return
		}
		if late != nil {
			// late is host code too: its panic must not crash the process.
			Safe(hctx, func(context.Context) error { late(err); return nil })
		}
	}()
	select {
	case err := <-c.done:
		return err
	case <-hctx.Done():
	}
	if !c.abandon() {
		return <-c.done // fn returned just as the wait ended
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return ErrTimeout
}

// call is one Bounded call; mu orders fn finishing against the caller
// giving up, so that exactly one of them handles the result.
type call struct {
	mu        sync.Mutex
	finished  bool
	abandoned bool
	done      chan error
}

func (c *call) abandon() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return false
	}
	c.abandoned = true
	return true
}
