package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/scheduler"
)

// ErrHookTimeout is returned (wrapped) when a host hook did not return
// within its bound; the relay has stopped waiting for it.
var ErrHookTimeout = errors.New("relay: host hook did not return in time")

// hookCall is one host hook running on its own goroutine, so that a hook
// that ignores its context cannot hold a turn (and its slots) forever.
type hookCall struct {
	mu        sync.Mutex
	finished  bool
	abandoned bool
	done      chan error // buffered: run never blocks on it
	cleanup   func()
	ctx       context.Context
	fn        func(context.Context) error
	start     func() // c.run, made once: "go c.start()" allocates nothing
}

// hookCalls recycles the calls that were not abandoned; an abandoned one
// still belongs to its goroutine.
var hookCalls = sync.Pool{New: func() any {
	c := &hookCall{done: make(chan error, 1)}
	c.start = c.run
	return c
}}

func (c *hookCall) run() {
	ctx, fn := c.ctx, c.fn
	err := hookcall.Safe(ctx, fn)
	c.mu.Lock()
	if c.abandoned {
		c.mu.Unlock()
		if c.cleanup != nil {
			// Undo what the late hook took (a slot): nobody will use it.
			hookcall.Safe(ctx, func(context.Context) error { c.cleanup(); return nil })
		}
		return
	}
	c.finished = true
	c.mu.Unlock()
	c.done <- err // the last touch: the caller may recycle c once it has err
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

// hookRunner runs the bounded hook calls of one turn, which come one at a
// time, on one reusable timer: a call costs a goroutine and little else.
// The zero value is ready; end releases it.
type hookRunner struct {
	timer    *time.Timer
	detached context.Context
	cancel   context.CancelFunc
}

// call runs fn(ctx) and waits until it returns, ctx ends or timeout (0: no
// bound beyond ctx) passes. A hook still running then is abandoned: call
// returns ctx.Err() or ErrHookTimeout, and cleanup (if set) runs once fn
// finally returns. fn sees ctx itself, not a deadline: the turn's contexts
// end with the turn, which ends an abandoned hook that honors its context.
// While waiting, ping (if set) is called every interval. A panic in fn is
// returned as an error.
func (r *hookRunner) call(ctx context.Context, timeout time.Duration, fn func(context.Context) error, cleanup func(), ping func(), interval time.Duration) error {
	c := hookCalls.Get().(*hookCall)
	c.cleanup, c.ctx, c.fn = cleanup, ctx, fn
	go c.start()
	if ping == nil || interval <= 0 {
		ping, interval = nil, 0
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	nextPing := time.Time{}
	if ping != nil {
		nextPing = time.Now().Add(interval)
	}
	var tick <-chan time.Time
	if arm := r.arm(deadline, nextPing); arm {
		tick = r.timer.C
	}
	for {
		select {
		case err := <-c.done:
			r.disarm()
			c.recycle()
			return err
		case <-tick:
			now := time.Now()
			if !deadline.IsZero() && !now.Before(deadline) {
				if !c.abandon() {
					err := <-c.done
					c.recycle()
					return err
				}
				return ErrHookTimeout
			}
			if ping != nil && !now.Before(nextPing) {
				ping()
				nextPing = now.Add(interval)
			}
			r.arm(deadline, nextPing)
		case <-ctx.Done():
			r.disarm()
			if !c.abandon() {
				err := <-c.done
				c.recycle()
				return err
			}
			return ctx.Err()
		}
	}
}

func (c *hookCall) recycle() {
	c.finished, c.abandoned, c.cleanup, c.ctx, c.fn = false, false, nil, nil, nil
	hookCalls.Put(c)
}

// arm sets the timer to the earlier of two times (zero: none) and says
// whether it is set.
func (r *hookRunner) arm(a, b time.Time) bool {
	at := a
	if at.IsZero() || !b.IsZero() && b.Before(at) {
		at = b
	}
	if at.IsZero() {
		return false
	}
	d := time.Until(at)
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d)
	}
	return true
}

func (r *hookRunner) disarm() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

// detachedCtx is a context with parent's values that does not end with
// parent (the client) but with the turn: for the hooks after the upstream
// answer (sticky binding, usage record).
func (r *hookRunner) detachedCtx(parent context.Context) context.Context {
	if r.detached == nil {
		r.detached, r.cancel = context.WithCancel(context.WithoutCancel(parent))
	}
	return r.detached
}

// end releases the runner at the end of its turn.
func (r *hookRunner) end() {
	r.disarm()
	if r.cancel != nil {
		r.cancel()
	}
}

// callHook is hookRunner.call for a call outside a turn: fn's context gets
// the timeout as its deadline and ends when callHook returns.
func callHook(ctx context.Context, timeout time.Duration, fn func(context.Context) error, cleanup func(), ping func(), interval time.Duration) error {
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		hctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	var r hookRunner
	defer r.end()
	return r.call(ctx, timeout, func(context.Context) error { return fn(hctx) }, cleanup, ping, interval)
}

// selectTimeout bounds Scheduler.Select: its own wait for an account slot
// plus HookTimeout for the Pool and Store calls around it. 0: only the
// client's context bounds it (the scheduler waits without a timeout).
func (h *Handler) selectTimeout() time.Duration {
	wait := max(knob.Or(h.Scheduler.AccountWait.Timeout, 30*time.Second), 0) // the scheduler's default
	if wait == 0 {
		return 0
	}
	return wait + h.hookTimeout()
}

// observe reports an outcome to the scheduler, which bounds its own
// OnAccountEvent hook (Scheduler.EventTimeout).
func (h *Handler) observe(accountID string, o scheduler.Outcome) {
	h.Scheduler.Observe(accountID, o)
}
