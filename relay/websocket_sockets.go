package relay

import (
	"fmt"
	"github.com/relaykit/responsesrelay/internal/knob"
	"time"

	"github.com/relaykit/responsesrelay/scheduler"
)

// errSocketCap declines a dial over MaxUpstreamSockets: the relay sends
// the attempt through the HTTP bridge.
var errSocketCap = fmt.Errorf("relay: upstream sockets of the account at MaxUpstreamSockets: %w", errUseHTTP)

// maxSockets is the socket cap of account a; 0: none.
func (h *wsServer) maxSockets(a *scheduler.Account) int {
	return socketCap(h.opts.MaxUpstreamSockets, a.Concurrency, defaultMaxUpstreamSockets)
}

// takeSocket counts one more open socket on a; false when a is at its cap.
func (h *wsServer) takeSocket(a *scheduler.Account) bool {
	max := h.maxSockets(a)
	h.sockMu.Lock()
	defer h.sockMu.Unlock()
	if h.sockets == nil {
		h.sockets = make(map[string]int)
	}
	if max > 0 && h.sockets[a.ID] >= max {
		return false
	}
	h.sockets[a.ID]++
	return true
}

// giveSocket counts a socket of account id closed.
func (h *wsServer) giveSocket(id string) {
	h.sockMu.Lock()
	defer h.sockMu.Unlock()
	if h.sockets[id]--; h.sockets[id] <= 0 {
		delete(h.sockets, id)
	}
}

// idleTimeout is how long a socket is kept between turns; 0: until it
// ages out.
func (h *wsServer) idleTimeout() time.Duration {
	return max(knob.Or(h.opts.UpstreamIdleTimeout, defaultUpstreamIdleTimeout), 0)
}

// armIdleLocked starts the idle clock of the pinned socket after a turn;
// the caller holds u.mu. One timer per connection, reset per turn: no
// allocation on the turn's path.
func (u *upstream) armIdleLocked() {
	u.busy = false
	d := u.h.idleTimeout()
	if u.ws == nil || u.broken || d <= 0 {
		return
	}
	u.lastUsed = time.Now()
	if u.idle == nil {
		u.idle = time.AfterFunc(d, u.idleFire)
	} else {
		u.idle.Reset(d)
	}
}

// idleFire closes the socket if no turn used it for the idle timeout. A
// call that lost the race to a turn (or to a later turn's reset) finds
// the socket busy or used recently, and leaves it.
func (u *upstream) idleFire() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.busy || u.ws == nil || time.Since(u.lastUsed) < u.h.idleTimeout() {
		return
	}
	u.closeLocked()
}

// stopIdleLocked stops the idle clock: a turn takes the socket, or the
// connection ends.
func (u *upstream) stopIdleLocked() {
	if u.idle != nil {
		u.idle.Stop()
	}
}
