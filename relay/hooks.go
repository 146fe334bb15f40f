package relay

import (
	"context"
	"errors"

	"github.com/relaykit/responsesrelay/internal/hookcall"
)

// ErrHookTimeout is returned (wrapped) when a host hook did not return
// within its bound; the relay has stopped waiting for it.
var ErrHookTimeout = errors.New("relay: host hook did not return in time")

// hook runs one host call of the turn on its runner, bounded by
// HookTimeout (see hookcall.Runner.Call).
func (t *turn) hook(ctx context.Context, fn func(context.Context) error) error {
	return hookErr(t.hooks.Call(ctx, t.h.hookTimeout(), fn, nil, nil, 0))
}

// bounded runs host code outside a turn, bounded by HookTimeout.
func (h *Handler) bounded(ctx context.Context, fn func(context.Context) error) error {
	return hookErr(hookcall.Bounded(ctx, h.hookTimeout(), fn, nil))
}

// hookErr gives a call abandoned at its bound the relay's exported error.
func hookErr(err error) error {
	if err == hookcall.ErrTimeout {
		return ErrHookTimeout
	}
	return err
}
