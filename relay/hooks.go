package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

// ErrHookTimeout is returned (wrapped) when a host hook did not return
// within its bound; the relay has stopped waiting for it.
var ErrHookTimeout = errors.New("relay: host hook did not return in time")

// errPanic wraps a panic in host code (a Gate, Pool, Store, limiter, sink).
type errPanic struct{ v any }

func (e errPanic) Error() string { return fmt.Sprintf("relay: hook panicked: %v", e.v) }

func callSafely(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errPanic{p}
		}
	}()
	return fn(ctx)
}

// hookCall is one host hook running on its own goroutine, so that a hook
// that ignores its context cannot hold a turn (and its slots) forever.
type hookCall struct {
	mu        sync.Mutex
	finished  bool
	abandoned bool
	done      chan error
	cleanup   func()
}

func (c *hookCall) run(ctx context.Context, fn func(context.Context) error) {
	err := callSafely(ctx, fn)
	c.mu.Lock()
	if c.abandoned {
		c.mu.Unlock()
		if c.cleanup != nil {
			// Undo what the late hook took (a slot): nobody will use it.
			callSafely(ctx, func(context.Context) error { c.cleanup(); return nil })
		}
		return
	}
	c.finished = true
	c.mu.Unlock()
	c.done <- err
}

// abandon gives up on the hook; false means it has just finished and its
// result is in done.
func (c *hookCall) abandon() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return false
	}
	c.abandoned = true
	return true
}

// callHook runs fn with ctx bounded by timeout (0: no bound beyond ctx)
// and waits until fn returns, ctx ends or the timeout passes. A hook still
// running then is abandoned: callHook returns ctx.Err() or ErrHookTimeout,
// and cleanup (if set) runs once fn finally returns. While waiting, ping
// (if set) is called every interval. A panic in fn is returned as an error.
func callHook(ctx context.Context, timeout time.Duration, fn func(context.Context) error, cleanup func(), ping func(), interval time.Duration) error {
	hctx, cancel := ctx, context.CancelFunc(nil)
	if timeout > 0 {
		hctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c := &hookCall{done: make(chan error, 1), cleanup: cleanup}
	go c.run(hctx, fn)
	var tick <-chan time.Time
	if ping != nil && interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-c.done:
			return err
		case <-tick:
			ping()
		case <-hctx.Done():
			if !c.abandon() {
				return <-c.done
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			return ErrHookTimeout
		}
	}
}

func (h *Handler) hookTimeout() time.Duration {
	if h.HookTimeout > 0 {
		return h.HookTimeout
	}
	return DefaultHookTimeout
}

// selectTimeout bounds Scheduler.Select: its own wait for an account slot
// plus HookTimeout for the Pool and Store calls around it. 0: only the
// client's context bounds it (the scheduler waits without a timeout).
func (h *Handler) selectTimeout() time.Duration {
	wait := h.Scheduler.AccountWait.Timeout
	switch {
	case wait < 0:
		return 0
	case wait == 0:
		wait = scheduler.DefaultWaitTimeout
	}
	return wait + h.hookTimeout()
}

// observe reports an outcome to the scheduler. Observe runs the host's
// OnAccountEvent on this goroutine; when one is set, the call is bounded so
// that a hook that blocks cannot hold the turn. The health state is updated
// before the hook runs, so abandoning it loses nothing.
func (h *Handler) observe(accountID string, o scheduler.Outcome) {
	if h.Scheduler.OnAccountEvent == nil {
		h.Scheduler.Observe(accountID, o)
		return
	}
	err := callHook(context.Background(), h.hookTimeout(), func(context.Context) error {
		h.Scheduler.Observe(accountID, o)
		return nil
	}, nil, nil, 0)
	if err != nil {
		h.log.Error("relay: Scheduler.OnAccountEvent did not return; the turn goes on without it", "account", accountID, "error", err)
	}
}
