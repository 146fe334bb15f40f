package relay

import (
	"context"
	"errors"
	"time"

	"github.com/relaykit/responsesrelay/internal/hookcall"
	"github.com/relaykit/responsesrelay/internal/knob"
	"github.com/relaykit/responsesrelay/scheduler"
)

// ErrHookTimeout is returned (wrapped) when a host hook did not return
// within its bound; the relay has stopped waiting for it.
var ErrHookTimeout = errors.New("relay: host hook did not return in time")

// hook runs one host call of the turn on its runner, bounded by
// HookTimeout (see hookcall.Runner.Call).
func (t *turn) hook(ctx context.Context, fn func(context.Context) error) error {
	return hookErr(t.hooks.Call(ctx, t.h.hookTimeout(), fn, nil, nil, 0))
}

// hookErr gives a call abandoned at its bound the relay's exported error.
func hookErr(err error) error {
	if err == hookcall.ErrTimeout {
		return ErrHookTimeout
	}
	return err
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
