package relay

import (
	"bytes"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

var (
	compactionType = []byte(`"compaction"`)
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
	if t.in.req.items.compaction {
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

var encryptedContent = []byte(`"encrypted_content"`)

// dropForeignItems removes from the input the reasoning items another
// account encrypted (all of them after an upstream refused one). Items
// acct made, and items whose maker the relay does not know, stay.
func (t *turn) dropForeignItems(body []byte, acct string) ([]byte, int) {
	// The client's input is known from the request's scan; a rebuilt one
	// also holds the records' items.
	if t.conv.rebuilt && !bytes.Contains(body, encryptedContent) || !t.conv.rebuilt && !t.in.req.items.reasoning {
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
