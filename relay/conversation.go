package relay

import (
	"bytes"
	"context"
	"errors"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/scheduler"
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

// turnConv is the conversation stage (ARCHITECTURE.md, "Conversations"):
// the chain the turn continues, as the relay's records know it, and what
// was done to the body for the account it goes to. admission.go loads
// prev; upstreamBody (upstream.go) reads it and sets rebuilt and removed;
// failover.go sets the retry flags; the answer files collect the output
// and recordTurn writes the record.
type turnConv struct {
	// prev is the record of previous_response_id (the connection's own
	// last response, or the Store's); nil when the relay knows none.
	prev *convRecord
	// local is prev's whole context when it is the connection's last
	// response: its segments, in order.
	local *localChain
	// rebuildAll: an upstream did not know previous_response_id: the
	// next attempt sends the chain whole, even to the account that made it.
	rebuildAll bool
	// stripAll: an upstream refused an encrypted item: the next attempt
	// sends no reasoning item at all.
	stripAll bool
	// retriedPrev, retriedBlob: the one same-account retry of each kind
	// was spent.
	retriedPrev, retriedBlob bool
	// rebuilt and removed describe the last attempt's body.
	rebuilt bool
	removed int
	// compactByTrigger: the account does not serve the compact endpoint;
	// the turn goes as a normal response with a compaction_trigger.
	compactByTrigger bool
	// everRebuilt: some attempt of the turn sent a rebuilt chain.
	everRebuilt bool
	// nextLocal is the connection's chain once this turn was served.
	nextLocal *localChain
	// itemBytes is the size of items.
	itemBytes int
	// items are the output items seen in output_item.done events, for a
	// terminal event whose output is empty (compaction).
	items [][]byte
}

// storeCall calls the Store of records: the in-memory one directly (it
// cannot hang), any other as a bounded hook.
func (t *turn) storeCall(ctx context.Context, fn func(context.Context, conversation.Store) error) error {
	s := t.h.convStore
	if m, ok := s.(*conversation.Memory); ok {
		return fn(ctx, m)
	}
	return t.hook(ctx, func(ctx context.Context) error { return fn(ctx, s) })
}

// loadPrevious reads the record of the response the turn continues. A
// Store that fails only costs the move: the turn goes on natively.
func (t *turn) loadPrevious() {
	id := t.in.req.PreviousResponseID
	if id == "" {
		return
	}
	if l := t.conv.local; l != nil && l.rec.responseID == id {
		t.conv.prev = l.record()
		return
	}
	t.conv.local = nil
	t.conv.prev = t.getRecord(id)
}

// getRecord reads the record of response id of the turn's API key; nil
// when there is none, or the Store failed (logged) or gave back something
// that is not that record.
func (t *turn) getRecord(id string) *convRecord {
	var b []byte
	err := t.storeCall(t.ctx, func(ctx context.Context, s conversation.Store) error {
		var err error
		b, err = s.Get(ctx, t.in.subj.APIKeyID, id)
		return err
	})
	if err != nil {
		if !errors.Is(err, conversation.ErrNotFound) {
			t.h.log.Warn("relay: reading a conversation record failed", "request_id", t.in.id, "error", err)
		}
		return nil
	}
	rec, ok := decodeRecord(b, t.in.subj.APIKeyID, id)
	if !ok {
		t.h.log.Warn("relay: a conversation record could not be read; the Store gave back something else", "request_id", t.in.id)
		return nil
	}
	return rec
}

var (
	compactionType    = []byte(`"compaction"`)
	compactionTrigger = []byte(`"compaction_trigger"`)
)

// requireCompactionMaker keeps a turn that carries a compaction item on
// the account that made it: the compacted history decrypts nowhere else
// and cannot be left out. The item is the client's (the blob index knows
// its maker) or the previous response's own output.
func (t *turn) requireCompactionMaker() {
	maker := ""
	if p := t.conv.prev; p != nil && bytes.Contains(p.output, compactionType) && hasCompaction(p.output) {
		maker = p.accountID
	}
	body := t.in.req.Body
	if bytes.Contains(body, compactionType) {
		gjson.GetBytes(body, "input").ForEach(func(_, item gjson.Result) bool {
			if item.Get("type").Str != "compaction" {
				return true
			}
			if blob := item.Get("encrypted_content"); blob.Type == gjson.String {
				if a, ok := t.h.blobs.madeBy(t.in.subj.APIKeyID, blob.Str); ok {
					maker = a
				}
			}
			return true
		})
	}
	t.route.sched.RequireAccount = maker
}

func hasCompaction(items []byte) bool {
	found := false
	gjson.ParseBytes(items).ForEach(func(_, item gjson.Result) bool {
		found = item.Get("type").Str == "compaction"
		return !found
	})
	return found
}

// needsRebuild reports whether the chain must be sent whole to acct:
// another account made the previous response, an upstream said it does not
// know it, or it was made with store=false and goes over HTTP (where the
// upstream keeps nothing of it).
func (c *turnConv) needsRebuild(acct string, viaHTTP bool) bool {
	p := c.prev
	if p == nil {
		return false
	}
	return c.rebuildAll || p.accountID != acct || viaHTTP && !p.store
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

// dropItem reports an item not to send to acct: a reasoning item with
// encrypted content that another account made (maker, for an output of
// the chain; the blob index, for anything else), or any reasoning item
// once an upstream refused one.
func (t *turn) dropItem(item gjson.Result, maker, acct string) bool {
	if t.conv.stripAll {
		return item.Get("type").Str == "reasoning"
	}
	if maker != "" && maker != acct {
		return isEncrypted(item)
	}
	return t.h.blobs.foreign(t.in.subj.APIKeyID, item, acct)
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

var encryptedContent = []byte(`"encrypted_content"`)

// dropForeignItems removes from the input the reasoning items another
// account encrypted (all of them after an upstream refused one). Items
// acct made, and items whose maker the relay does not know, stay.
func (t *turn) dropForeignItems(body []byte, acct string) ([]byte, int) {
	if !bytes.Contains(body, encryptedContent) {
		return body, 0
	}
	input := gjson.GetBytes(body, "input")
	if !input.IsArray() {
		return body, 0
	}
	var b itemWriter
	removed := b.items([]byte(input.Raw), func(item gjson.Result) bool { return t.dropItem(item, "", acct) })
	if removed == 0 {
		return body, 0
	}
	out, err := sjson.SetRawBytes(body, "input", b.close())
	if err != nil {
		return body, 0
	}
	return out, removed
}

// isEncrypted reports a reasoning item that carries encrypted content: it
// decrypts only on the account that made it.
func isEncrypted(item gjson.Result) bool {
	return item.Get("type").Str == "reasoning" && item.Get("encrypted_content").Exists()
}

// inputItems is the request's input as an item array: the body's own
// bytes for an array, one user message for a string, none for no input.
func inputItems(body []byte) []byte {
	in := rawAt(body, "input")
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

// collectItem keeps an output item of the stream (pump.Options.OutputItem).
// Only compaction items are kept: a terminal event whose output is empty
// stands for one (PROTOCOL: "response.completed may carry an empty
// output"); every other answer names its items in the terminal event.
// What is kept is bounded by MaxBodyBytes: more could not be sent back
// anyway, and an upstream that repeats items must not grow the turn.
func (t *turn) collectItem(item []byte) {
	if t.conv.itemBytes+len(item) > int(t.h.maxBody()) {
		return
	}
	if bytes.Contains(item, compactionType) && gjson.GetBytes(item, "type").Str == "compaction" {
		t.conv.items = append(t.conv.items, bytes.Clone(item))
		t.conv.itemBytes += len(item)
	}
}

// recordTurn writes the record of a served response before the client
// learns the turn ended, and notes which account made its encrypted
// items. output is the response's output array (from the terminal event
// or the JSON body, valid during the call); when it is empty the items
// seen on the stream stand in for it.
func (t *turn) recordTurn(sel *scheduler.Selection, terminal, responseID string, output []byte) {
	if terminal != event.TypeCompleted && terminal != event.TypeIncomplete || responseID == "" {
		return
	}
	if len(output) < 2 || output[0] != '[' || len(bytes.TrimSpace(output[1:len(output)-1])) == 0 {
		var b itemWriter
		for _, it := range t.conv.items {
			b.add(it)
		}
		output = b.close()
	}
	if bytes.Contains(output, encryptedContent) {
		t.h.blobs.learn(t.in.subj.APIKeyID, output, sel.Account.ID)
	}
	mem, _ := t.h.convStore.(*conversation.Memory)
	ws := t.in.transport != "http"
	if mem != nil && mem.MaxBytes < 0 && !ws {
		return // nothing kept, nobody to hand the record to
	}
	req := t.in.req
	rec := convRecord{
		responseID: responseID,
		apiKeyID:   t.in.subj.APIKeyID,
		previousID: req.PreviousResponseID,
		model:      req.Model,
		accountID:  sel.Account.ID,
		store:      !req.noStore,
		input:      inputItems(req.Body),
		output:     output,
		createdAt:  t.in.start,
	}
	// The record's own bytes hold input and output from here on: the
	// body's and the event's buffers are not the relay's to keep.
	enc := rec.encode()
	if ws {
		kept := rec
		t.conv.nextLocal = t.conv.local.next(&kept, int(t.h.maxBody()))
	}
	var err error
	if mem != nil {
		err = mem.Put(context.Background(), rec.apiKeyID, rec.responseID, enc) // cannot hang
	} else {
		err = t.hook(t.hooks.Detached(t.ctx), func(ctx context.Context) error {
			return t.h.convStore.Put(ctx, rec.apiKeyID, rec.responseID, enc)
		})
	}
	if err != nil {
		t.h.log.Warn("relay: writing a conversation record failed", "request_id", t.in.id, "error", err)
	}
}

// upstreamCode is the error code of an upstream's error body.
func upstreamCode(body []byte) string {
	if !validJSON(body) {
		return ""
	}
	return gjson.GetBytes(body, "error.code").String()
}

// retrySameAccount reports whether a failed attempt is one the relay fixes
// itself on the same account: the upstream did not know the previous
// response (send the chain whole) or could not decrypt an item (send none).
// Neither counts against the account or as a switch.
func (t *turn) retrySameAccount(ae *attemptError) bool {
	if ae.kind != failStatus || ae.status != 400 {
		return false
	}
	switch upstreamCode(ae.body) {
	case "previous_response_not_found":
		if t.conv.prev == nil || t.conv.retriedPrev || t.conv.rebuilt {
			return false
		}
		t.conv.retriedPrev, t.conv.rebuildAll = true, true
		return true
	case "invalid_encrypted_content":
		if t.conv.retriedBlob || !bytes.Contains(t.in.req.Body, encryptedContent) && !t.conv.rebuilt {
			return false
		}
		t.conv.retriedBlob, t.conv.stripAll = true, true
		return true
	}
	return false
}
