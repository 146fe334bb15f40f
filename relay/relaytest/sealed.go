package relaytest

import (
	"strconv"

	"github.com/tidwall/gjson"
)

// Reasoning and compaction items: what the fake hands out (an item before
// the answer, or a compaction as the only item) and how it checks the ones
// that come back as input. See encrypted.go for the blobs themselves.

// includeEncrypted is the include value that asks for reasoning items.
const includeEncrypted = "reasoning.encrypted_content"

// sealedItem is a reasoning or compaction item of a request's input.
type sealedItem struct {
	kind    byte   // blobReasoning or blobCompaction
	id      string // its id, "" when absent
	blob    string // encrypted_content when it is a string
	hasBlob bool   // encrypted_content is present and not null
}

func readSealed(typ string, it gjson.Result) sealedItem {
	si := sealedItem{kind: blobReasoning, id: it.Get("id").String()}
	if typ == "compaction" {
		si.kind = blobCompaction
	}
	if enc := it.Get("encrypted_content"); enc.Exists() && enc.Type != gjson.Null {
		si.hasBlob, si.blob = true, enc.Str
	}
	return si
}

func misplacedTrigger(i int) *apiError {
	return &apiError{status: 400, typ: typeInvalidRequest, param: "input",
		msg: "Invalid 'input[" + strconv.Itoa(i) + "]': a compaction_trigger item must be the last item of the input."}
}

// checkSealed refuses reasoning and compaction items that this account
// cannot use: a blob it did not make, or an item sent by id alone that it
// did not store. u.mu must be held.
func (a *account) checkSealed(q *request) *apiError {
	for _, si := range q.sealed {
		if si.hasBlob {
			if !openBlob(a.name, si.kind, si.blob) {
				return &apiError{status: 400, typ: typeInvalidRequest, code: "invalid_encrypted_content",
					msg: "The encrypted content for item " + si.id +
						" could not be verified. Reason: Encrypted content could not be decrypted or parsed."}
			}
			continue
		}
		if !q.store {
			return &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "Item with id '" + si.id + "' not found. Items are not persisted when `store` is set to false. " +
					"Try again with `store` set to true, or remove this item from your input."}
		}
		if _, ok := a.sealed[si.id]; !ok || si.id == "" {
			return &apiError{status: 400, typ: typeInvalidRequest, param: "input",
				msg: "Item with id '" + si.id + "' not found."}
		}
	}
	return nil
}

// addLead decides the item that comes before the answer: a compaction
// (then the only item) when the input ends with a compaction_trigger, else
// a reasoning item when the request includes its encrypted content.
func (t *turn) addLead(a *account) {
	q := t.req
	switch {
	case q.warmup:
		return
	case q.compact:
		t.lead, t.leadID = blobCompaction, newID("cmp_", 32)
	case q.encReasoning:
		t.lead, t.leadID, t.at = blobReasoning, newID("rs_", 32), 1
	default:
		return
	}
	t.leadBlob = sealBlob(a.name, t.lead, t.leadID, a.blobs.Add(1), t.createdAt)
}

// appendLead appends the item addLead decided.
func (t *turn) appendLead(b []byte) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, t.leadID...)
	if t.lead == blobCompaction {
		b = append(b, `","type":"compaction","encrypted_content":"`...)
	} else {
		b = append(b, `","type":"reasoning","summary":[],"encrypted_content":"`...)
	}
	b = append(b, t.leadBlob...)
	return append(b, `"}`...)
}
