package relay

import (
	"bytes"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Limits of a rebuilt chain: past them the relay answers as the upstream
// would when it does not know the response (400
// previous_response_not_found), never with a 5xx.
const (
	// maxChainRecords is how many records a rebuild follows.
	maxChainRecords = 1000
)

// needsRebuild reports whether the chain must be sent whole to acct:
// another account made the previous response, an upstream said it does not
// know it, or it was made with store=false and goes over HTTP (where the
// upstream keeps nothing of it).
func (c *turnConv) needsRebuild(acct string, viaHTTP bool) bool {
	p := c.prev
	if p == nil {
		return false
	}
	return c.rebuildAll || c.stateless || p.accountID != acct || viaHTTP && !p.store
}

// chainContext is the context of the previous response: every input and
// output item of the chain, oldest first, as one JSON array, without the
// items acct could not decrypt (dropItem). A chain the relay cannot follow
// to its start, or one larger than MaxBodyBytes, gives
// errPreviousNotFound, as the upstream answers a response it does not
// know.
func (t *turn) chainContext(acct string) ([]byte, int, *APIError) {
	notFound := errPreviousNotFound(t.in.req.PreviousResponseID)
	limit := int(t.h.maxBody())
	segs := t.chainSegments(limit)
	if segs == nil {
		return nil, 0, notFound
	}
	var b itemWriter
	removed := 0
	for _, sg := range segs {
		removed += b.items(sg.items, func(item gjson.Result) bool { return t.dropItem(item, sg.maker, acct) })
		if b.len() > limit {
			return nil, 0, notFound
		}
	}
	return b.close(), removed, nil
}

// chainSegments lists the chain's item arrays, oldest first: the
// connection's own when it holds the previous response, else the
// Store's records, followed back to the chain's start. nil when the chain
// cannot be followed within limit bytes and maxChainRecords records.
func (t *turn) chainSegments(limit int) []localSeg {
	if l := t.conv.local; l != nil {
		return l.segs
	}
	chain := []*convRecord{t.conv.prev}
	size := t.conv.prev.size()
	for r := t.conv.prev; r.previousID != ""; {
		if len(chain) >= maxChainRecords || size > limit {
			return nil
		}
		next := t.getRecord(r.previousID)
		if next == nil {
			return nil
		}
		chain = append(chain, next)
		size += next.size()
		r = next
	}
	segs := make([]localSeg, 0, 2*len(chain))
	for i := len(chain) - 1; i >= 0; i-- {
		r := chain[i]
		segs = append(segs, localSeg{items: r.input}, localSeg{items: r.output, maker: r.accountID})
	}
	return segs
}

// rebuildBody sends the chain whole: its context, then the turn's input,
// without previous_response_id.
func (t *turn) rebuildBody(body []byte, acct string) ([]byte, int, *APIError) {
	ctx, removed, apiErr := t.chainContext(acct)
	if apiErr != nil {
		return nil, 0, apiErr
	}
	input := inputItems(body)
	var b itemWriter
	b.raw(ctx)
	b.items(input, nil)
	full := b.close()
	if len(full)+len(body) > int(t.h.maxBody()) {
		return nil, 0, errPreviousNotFound(t.in.req.PreviousResponseID)
	}
	out, err := sjson.SetRawBytes(body, "input", full)
	if err == nil {
		out, err = sjson.DeleteBytes(out, "previous_response_id")
	}
	if err != nil {
		return nil, 0, errPreviousNotFound(t.in.req.PreviousResponseID)
	}
	return out, removed, nil
}

// inputItems is the request's input as an item array: the body's own
// bytes for an array, one user message for a string, none for no input.
func inputItems(body []byte) []byte {
	in := event.RawAt(body, "input")
	switch {
	case len(in) > 0 && in[0] == '[':
		return in
	case len(in) > 0 && in[0] == '"':
		b := make([]byte, 0, len(in)+48)
		b = append(b, `[{"type":"message","role":"user","content":`...)
		b = append(b, in...)
		return append(b, `}]`...)
	}
	return emptyItems
}

var emptyItems = []byte("[]")

// itemWriter builds a JSON array of items.
type itemWriter struct {
	buf bytes.Buffer
	n   int
}

// items appends the items of the array raw, except those drop reports
// (nil: none), and returns how many it dropped.
func (w *itemWriter) items(raw []byte, drop func(gjson.Result) bool) int {
	dropped := 0
	gjson.ParseBytes(raw).ForEach(func(_, item gjson.Result) bool {
		if drop != nil && drop(item) {
			dropped++
			return true
		}
		w.add([]byte(item.Raw))
		return true
	})
	return dropped
}

// raw appends the items of an array already checked.
func (w *itemWriter) raw(arr []byte) { w.items(arr, nil) }

func (w *itemWriter) add(item []byte) {
	if w.n == 0 {
		w.buf.WriteByte('[')
	} else {
		w.buf.WriteByte(',')
	}
	w.buf.Write(item)
	w.n++
}

func (w *itemWriter) len() int { return w.buf.Len() }

func (w *itemWriter) close() []byte {
	if w.n == 0 {
		return []byte("[]")
	}
	w.buf.WriteByte(']')
	return w.buf.Bytes()
}
