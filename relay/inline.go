package relay

import (
	"context"
	"sync"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Host code runs as a bounded call on a goroutine of its own (hooks.go),
// so that a call that ignores its context cannot hold a turn. The
// library's own in-memory implementations honor their contexts and have
// nothing to hang on; they run on the turn's goroutine instead, which
// saves a goroutine start and two hand-offs per call: at one client, a
// tenth of a millisecond over a turn's few calls on a loaded machine.
// Which calls: the user slot on a *concurrency.Memory, and Select and Bind
// on a Scheduler whose Pool, Store and Limiter are all in memory (see
// inProcessScheduler).

// inProcessScheduler reports whether every store s calls in Select and
// Bind is the library's in-memory one: a *StaticPool, the default Store,
// and the default or a *concurrency.Memory Limiter. Select then waits
// only in concurrency.Memory, which ends at its own timeout or ctx.
func inProcessScheduler(s *scheduler.Scheduler) bool {
	if s == nil || s.Store != nil {
		return false
	}
	if _, ok := s.Pool.(*scheduler.StaticPool); !ok {
		return false
	}
	switch s.Limiter.(type) {
	case nil, *concurrency.Memory:
		return true
	}
	return false
}

// inProcessLimiter reports whether the user slots are in memory.
func inProcessLimiter(l concurrency.SlotLimiter) bool {
	_, ok := l.(*concurrency.Memory)
	return ok
}

// waitOn is t.wait, or waitInline when the callee is in memory
// (inProcess): one place decides how an admission step runs.
func (t *turn) waitOn(inProcess bool, timeout time.Duration, fn func(ctx context.Context) error, late func(error)) error {
	if inProcess {
		return t.waitInline(fn) // fn ends at its own wait bound or with the client
	}
	return t.wait(timeout, fn, late)
}

// hookOn is t.hook, or a guarded call on the turn's goroutine when the
// callee is in memory (inProcess).
func (t *turn) hookOn(inProcess bool, ctx context.Context, fn func(context.Context) error) error {
	if inProcess {
		return hookcall.Safe(ctx, fn)
	}
	return t.hook(ctx, fn)
}

// waitInline runs fn on the turn's goroutine, as t.wait would on another:
// a streaming client is pinged every KeepAlive while fn waits. fn must
// end with its context (or a bound of its own). A panic is returned as a
// *hookcall.PanicError, as from a hook.
func (t *turn) waitInline(fn func(ctx context.Context) error) error {
	if t.client.out != nil {
		if every := t.h.keepAlive(); every > 0 {
			p := &inlinePinger{out: t.client.out, every: every}
			p.start()
			defer p.stop()
		}
	}
	return hookcall.Safe(t.ctx, fn)
}

// inlinePinger pings a waiting streaming client from a timer.
type inlinePinger struct {
	out   eventSink
	every time.Duration

	mu      sync.Mutex // orders the timer's start, re-arming and stop
	timer   *time.Timer
	stopped bool
}

func (p *inlinePinger) start() {
	p.mu.Lock()
	p.timer = time.AfterFunc(p.every, p.fire)
	p.mu.Unlock()
}

func (p *inlinePinger) fire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.out.Ping() // a dead client shows up as the context ending
	p.timer.Reset(p.every)
}

func (p *inlinePinger) stop() {
	p.mu.Lock()
	p.stopped = true
	p.timer.Stop()
	p.mu.Unlock()
}
