package relay

// Hooks into Handler for the tests of package relay_test.

// BodyMemoryHeld reports the body budget's bytes reserved now.
func BodyMemoryHeld(h *Handler) int64 {
	h.init()
	return h.bodies.held.Load()
}

// BodyMemoryPeak reports the most body budget bytes ever reserved at once.
func BodyMemoryPeak(h *Handler) int64 {
	h.init()
	return h.bodies.peak.Load()
}

// BodyMemoryWaiting reports the requests waiting for body budget now.
func BodyMemoryWaiting(h *Handler) int64 {
	h.init()
	return h.bodies.waiting.Load()
}

// WebSocketConns reports how many WebSocket connections h has open.
func WebSocketConns(h *Handler) int { return h.ws.active() }

// LocalBytes reports the bytes h's WebSocket connections hold as their
// last response's context.
func LocalBytes(h *Handler) int64 { return h.localBytes.Load() }

// SetLocalLimit bounds what h's WebSocket connections hold as their last
// response's context.
func SetLocalLimit(h *Handler, n int64) { h.maxLocal = n }

// UpstreamSockets reports how many upstream sockets h holds open on an
// account.
func UpstreamSockets(h *Handler, account string) int {
	h.ws.sockMu.Lock()
	defer h.ws.sockMu.Unlock()
	return h.ws.sockets[account]
}

// RenewWaiting reports how many callers wait for a renewal of an
// account's token now.
func RenewWaiting(h *Handler) int64 { return h.renewWaiting.Load() }
