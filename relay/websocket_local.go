package relay

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

func (l *localChain) record() *convRecord { return l.rec }

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
