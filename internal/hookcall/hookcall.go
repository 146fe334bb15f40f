// Package hookcall calls host code (hooks, stores, sinks) so that a panic
// in it becomes an error and a call that does not return in time is left
// behind instead of holding the caller. Safe guards a call on the caller's
// goroutine; Runner runs bounded calls one after another on pooled
// goroutines and one timer, with optional keep-alive pings while it waits;
// Bounded is one such call with the bound in its context; Go starts one
// whose result the caller takes later.
package hookcall

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is the answer of Bounded and Runner.Call when fn did not
// return within its timeout.
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

// Go runs fn(ctx) on a goroutine of its own, with a host call's stack
// (stack.go) and Safe's panic guard, and sends its result on the channel
// it returns, which has room for it: a caller that stops waiting leaves
// nothing blocked. For a call the caller awaits later, while it does
// other work; fn should end with ctx.
func Go(ctx context.Context, fn func(context.Context) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		growStack()
		done <- Safe(ctx, fn)
	}()
	return done
}

// Bounded runs fn on its own goroutine, with a context that ends after
// timeout (<= 0: only when ctx does), and waits until fn returns, ctx ends
// or the timeout passes. It returns fn's error (a panic as *PanicError),
// or, when it stopped waiting first, ErrTimeout or ctx.Err(). fn then
// runs on abandoned, with its context already ended; late, if set, gets
// its result once it returns, e.g. to log a late panic or undo what it
// took. It is a Runner's Call for one call whose context carries the
// bound.
func Bounded(ctx context.Context, timeout time.Duration, fn func(context.Context) error, late func(error)) error {
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		hctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	// hctx ends at the bound: the Runner needs no timer of its own, and so
	// no End.
	var r Runner
	abandoned, err := r.call(hctx, 0, fn, late, nil, 0)
	if !abandoned {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return ErrTimeout
}
