package relay

import (
	"context"
	"sync"
)

// inflight counts turns still inside ServeHTTP, so that a host can wait for
// them (and their usage records) before it closes its usage sink.
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

// Wait blocks until no turn is being served (every usage record of the
// turns that started has been handed to the Usage sink) or ctx ends. Call
// it after http.Server.Shutdown, whose wait does not cover turns whose
// client has gone but whose upstream is still being drained, and before
// closing the Usage sink.
func (h *Handler) Wait(ctx context.Context) error { return h.active.wait(ctx) }

// Active reports how many turns are being served right now.
func (h *Handler) Active() int {
	h.active.mu.Lock()
	defer h.active.mu.Unlock()
	return h.active.n
}
