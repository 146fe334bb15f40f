package relay

import (
	"bytes"
	"context"
	"errors"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/event"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// turnConv is the conversation stage (ARCHITECTURE.md, "Conversations are
// records, linked"): the chain the turn continues, as the relay's records
// know it, and what was done to the body for the account it goes to.
// serve (failover.go) loads prev before selection; upstreamBody
// (upstream.go) reads it and sets rebuilt and removed; retrySameAccount
// sets the retry flags; the answer files collect the output and
// recordTurn writes the record.
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
	// stateless: the attempt's account keeps no state (a Chat Completions
	// upstream): a chain is always sent whole.
	stateless bool
	// chatNoUsage: a Chat Completions stream ended without its usage
	// chunk (cut short included); the turn is recorded upstream_error,
	// never as free.
	chatNoUsage bool
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
		t.conv.prev = l.rec
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
		if t.conv.retriedBlob || !t.in.req.items.reasoning && !t.in.req.items.compaction && !t.conv.rebuilt {
			return false
		}
		t.conv.retriedBlob, t.conv.stripAll = true, true
		return true
	}
	return false
}
