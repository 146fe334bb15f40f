package relay

import (
	"context"
	"sync"
)

// inflight counts work in progress (the turns being served, the open
// WebSocket connections), so that Shutdown can wait for it.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while idle
}

func (f *inflight) add() {
	f.mu.Lock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	ch := f.idle
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown ends the Handler's work on a server that is stopping. It
// refuses new WebSocket connections, closes each open one with 1001 at its
// next turn boundary, and waits until no turn is being served on either
// transport, including turns whose client left and whose upstream is still
// read for usage (DrainTimeout): then every usage record has been handed
// to the Usage sink. Call it after http.Server.Shutdown, whose wait covers
// neither upgraded connections nor those drains, and before closing the
// sink. It also stops polling background responses (BackgroundPoll); those
// still running are logged, not recorded. Last it gives back the account
// slots the Scheduler keeps after their turns (Scheduler.SlotLinger), so
// that they do not stay taken in a shared Limiter. When ctx ends first, the
// WebSocket connections still open are cut and ctx.Err() is returned.
// Requests that still arrive are served.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.init()
	if err := h.ws.shutdown(ctx); err != nil {
		return err
	}
	err := h.active.wait(ctx)
	h.bg.shutdown(h)
	if h.Scheduler != nil {
		h.Scheduler.ReleaseLingering()
	}
	return err
}

// Active reports how many turns are being served right now.
func (h *Handler) Active() int { return h.active.count() }
