package hookcall

import (
	"context"
	"sync"
	"time"
)

// Runner runs bounded calls to host code that come one at a time (the
// hooks of one turn), each on its own goroutine so that a call that
// ignores its context cannot hold the caller, on one reusable timer: a
// call costs a goroutine from a pool of call records and little else.
// The zero Runner is ready; End releases it. A Runner must not be used by
// two goroutines at once.
type Runner struct {
	timer    *time.Timer
	detached context.Context
	cancel   context.CancelFunc
}

// Call runs fn(ctx) and waits until it returns, ctx ends or timeout (<= 0:
// no bound beyond ctx) passes. A call still running then is abandoned:
// Call returns ctx.Err() or ErrTimeout, and late (if set) gets fn's result
// once fn finally returns, e.g. to undo what it took (a slot nobody will
// use). fn sees ctx itself, not a deadline: a caller whose contexts end
// with its own work ends an abandoned call that honors its context. While
// waiting, ping (if set) is called every interval (<= 0: never). A panic
// in fn (or in late) is returned (or dropped) as a *PanicError.
func (r *Runner) Call(ctx context.Context, timeout time.Duration, fn func(context.Context) error, late func(error), ping func(), interval time.Duration) error {
	_, err := r.call(ctx, timeout, fn, late, ping, interval)
	return err
}

// call is Call that also reports whether fn was abandoned.
func (r *Runner) call(ctx context.Context, timeout time.Duration, fn func(context.Context) error, late func(error), ping func(), interval time.Duration) (abandoned bool, err error) {
	c := calls.Get().(*call)
	c.late, c.ctx, c.fn = late, ctx, fn
	go c.start()
	if ping == nil || interval <= 0 {
		ping, interval = nil, 0
	}
	var deadline, nextPing time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if ping != nil {
		nextPing = time.Now().Add(interval)
	}
	var tick <-chan time.Time
	if r.arm(deadline, nextPing) {
		tick = r.timer.C
	}
	for {
		select {
		case err := <-c.done:
			r.disarm()
			c.recycle()
			return false, err
		case <-tick:
			now := time.Now()
			if !deadline.IsZero() && !now.Before(deadline) {
				if !c.abandon() {
					err := <-c.done
					c.recycle()
					return false, err
				}
				return true, ErrTimeout
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
				return false, err
			}
			return true, ctx.Err()
		}
	}
}

// arm sets the timer to the earlier of two times (zero: none) and says
// whether it is set.
func (r *Runner) arm(a, b time.Time) bool {
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

func (r *Runner) disarm() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

// Detached is a context with parent's values that does not end with
// parent but with the Runner (End): for calls that must run after the
// caller's client has left (a usage record, a binding). It is made once;
// later calls return the same context whatever their parent.
func (r *Runner) Detached(parent context.Context) context.Context {
	if r.detached == nil {
		r.detached, r.cancel = context.WithCancel(context.WithoutCancel(parent))
	}
	return r.detached
}

// End releases the Runner: its timer stops and its detached context ends.
func (r *Runner) End() {
	r.disarm()
	if r.cancel != nil {
		r.cancel()
	}
}

// call is one host call running on its own goroutine; mu orders fn
// finishing against the caller giving up, so that exactly one of them
// handles the result.
type call struct {
	mu        sync.Mutex
	finished  bool
	abandoned bool
	done      chan error // buffered: run never blocks on it
	late      func(error)
	ctx       context.Context
	fn        func(context.Context) error
	start     func() // c.run, made once: "go c.start()" allocates nothing
}

// calls recycles the calls that were not abandoned; an abandoned one still
// belongs to its goroutine.
var calls = sync.Pool{New: func() any {
	c := &call{done: make(chan error, 1)}
	c.start = c.run
	return c
}}

func (c *call) run() {
	growStack()
	ctx, fn := c.ctx, c.fn
	err := Safe(ctx, fn)
	c.mu.Lock()
	if c.abandoned {
		c.mu.Unlock()
		if c.late != nil {
			// late is host code too: its panic must not crash the process.
			Safe(ctx, func(context.Context) error { c.late(err); return nil })
		}
		return
	}
	c.finished = true
	c.mu.Unlock()
	c.done <- err // the last touch: the caller may recycle c once it has err
}

// abandon gives up on the call; false means it has just finished and its
// result is in done.
func (c *call) abandon() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return false
	}
	c.abandoned = true
	return true
}

func (c *call) recycle() {
	c.finished, c.abandoned, c.late, c.ctx, c.fn = false, false, nil, nil, nil
	calls.Put(c)
}
