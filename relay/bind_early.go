package relay

import (
	"context"

	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/scheduler"
)

// A streamed turn's sticky binding is written once its output starts,
// while its events flow, instead of just before its terminal event: with
// a Scheduler whose stores are shared (Redis) the write is a round trip,
// which would otherwise lie on the client's path to the end of the
// stream. The terminal event still waits for it, so a next turn sent at
// once, to any instance, finds the binding. The price: a turn that fails
// after its output started is bound too, to the account that served it,
// which is where its response lives. With the Scheduler in memory the
// binding costs nothing and is made before the terminal event as before.

// turnBind is the binding started at a stream's first output.
type turnBind struct {
	done    <-chan error // nil: none started
	cancel  context.CancelFunc
	ctx     context.Context
	started bool // a binding was started in this turn (whatever came of it)
}

// bindEarly starts binding responseID (and the session) to sel's account
// on a goroutine of its own, bounded by HookTimeout.
func (t *turn) bindEarly(sel *scheduler.Selection, responseID string) {
	if t.h.schedInProcess || responseID == "" || t.bound.started {
		return
	}
	ctx, cancel := context.WithTimeout(t.hooks.Detached(t.ctx), t.h.hookTimeout())
	done := hookcall.Go(ctx, t.bindCall(sel, responseID))
	t.bound = turnBind{done: done, cancel: cancel, ctx: ctx, started: true}
}

// awaitBind waits for the binding bindEarly started, at most until its
// bound (a call still running then is left to end at it), and reports
// whether one was started.
func (t *turn) awaitBind(sel *scheduler.Selection) bool {
	b := &t.bound
	if b.done == nil {
		return b.started
	}
	var err error
	select {
	case err = <-b.done:
	case <-b.ctx.Done():
		err = ErrHookTimeout
	}
	b.cancel()
	b.done = nil
	t.bindFailed(sel, hookErr(err))
	return true
}
