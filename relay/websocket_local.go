package relay

// maxLocalBytes bounds the bytes all WebSocket connections of a Handler
// hold as their last response's context: idle connections must not add
// up to more. A chain that does not fit is not kept; its next turn reads
// the Store (where the relay's records are) instead.
const maxLocalBytes = 256 << 20

func (h *Handler) localLimit() int64 {
	if h.maxLocal > 0 {
		return h.maxLocal
	}
	return maxLocalBytes
}

// keepLocal makes l the connection's last response, charged to the
// Handler's bound on what connections hold (shared segments are charged
// once per connection, as the difference from the chain it replaces).
func (c *conn) keepLocal(l *localChain) {
	held := &c.h.relay.localBytes
	old := 0
	if c.local != nil {
		old = c.local.size
	}
	if l == nil {
		held.Add(int64(-old))
		c.local = nil
		return
	}
	if held.Add(int64(l.size-old)) > c.h.relay.localLimit() {
		held.Add(int64(-l.size))
		c.local = nil
		return
	}
	c.local = l
}

// localChain is a WebSocket connection's last response with its whole
// context, as the upstream's connection-local cache keeps it: kept
// whatever the Conversations setting, so that store=false turns chain
// over the HTTP bridge, across a redialled upstream socket and after a
// move to another account. It holds the context as the item arrays of
// each turn, shared with the previous localChain, not copied.
type localChain struct {
	rec  *convRecord // the last turn's record
	segs []localSeg  // the context, oldest first, ending with rec's input and output
	size int
}

// localSeg is one item array of the context and the account that made
// its items ("" for a client's input).
type localSeg struct {
	items []byte
	maker string
}

// next is the connection's chain after rec was served: l continued when
// rec continues l's response, else rec alone when it starts a chain. A
// response that continues a chain the connection does not hold whole
// (from the Store), or one over limit bytes, leaves no local chain: its
// next turn reads the Store.
func (l *localChain) next(rec *convRecord, limit int) *localChain {
	var segs []localSeg
	size := 0
	switch {
	case rec.previousID == "":
	case l != nil && l.rec.responseID == rec.previousID:
		segs, size = l.segs[:len(l.segs):len(l.segs)], l.size
	default:
		return nil
	}
	size += len(rec.input) + len(rec.output)
	if size > limit {
		return nil
	}
	segs = append(segs, localSeg{items: rec.input}, localSeg{items: rec.output, maker: rec.accountID})
	return &localChain{rec: rec, segs: segs, size: size}
}
