package relaytest_test

import (
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// itemDone returns the item of the turn's output_item.done of the given type.
func itemDone(ms []gjson.Result, typ string) gjson.Result {
	for _, m := range ms {
		if m.Get("type").String() == "response.output_item.done" && m.Get("item.type").String() == typ {
			return m.Get("item")
		}
	}
	return gjson.Result{}
}

func TestWSEncryptedContent(t *testing.T) {
	s := newServer(t)
	ca, cb := openWS(t, s, "a"), openWS(t, s, "b")
	first := wsTurn(t, ca, `{"type":"response.create","model":"m","store":false,`+include+`,"input":"hello world"}`)
	checkSeq(t, first)
	id1 := completedID(t, first)
	rs := itemDone(first, "reasoning")
	rsID, blob := rs.Get("id").String(), rs.Get("encrypted_content").String()
	checkBlob(t, blob)

	// The connection-local cache chains a store:false response.
	second := wsTurn(t, ca, `{"type":"response.create","model":"m","store":false,`+include+`,"previous_response_id":"`+id1+`","input":"again"}`)
	completedID(t, second)
	checkSeq(t, second)
	// 10+1 words, plus the 12 in and 21 out of the first turn.
	if u := second[len(second)-1].Get("response.usage"); u.Get("input_tokens").Int() != 44 || u.Get("input_tokens_details.cached_tokens").Int() != 12 {
		t.Errorf("usage %s", u.Raw)
	}

	// The blob goes back to its account, and to no other.
	replay := `{"type":"response.create","model":"m","store":false,"input":[{"role":"user","content":"hello world"},` +
		reasoningItem(rsID, blob) + `,{"role":"user","content":"more"}]}`
	ms := wsTurn(t, cb, replay)
	if len(ms) != 1 {
		t.Fatalf("messages %v", msgTypes(ms))
	}
	checkError(t, ms[0], 400, "invalid_request_error", "invalid_encrypted_content", "")
	if ms[0].Get("error.message").String() != unverified(rsID) || ms[0].Get("error.param").Type != gjson.Null {
		t.Errorf("error %s", ms[0].Raw)
	}
	completedID(t, wsTurn(t, cb, `{"type":"response.create","model":"m","input":"still open"}`))
	// Only the most recent response stays in the cache.
	id2 := completedID(t, wsTurn(t, ca, replay))
	ms = wsTurn(t, ca, `{"type":"response.create","model":"m","store":false,"input":[`+reasoningItem(rsID, "gAAAAAgarbage==")+`]}`)
	checkError(t, ms[0], 400, "invalid_request_error", "invalid_encrypted_content", "")
	ms = wsTurn(t, ca, `{"type":"response.create","model":"m","store":false,"input":[`+reasoningItem(rsID, "")+`]}`)
	checkError(t, ms[0], 400, "invalid_request_error", "", "input")
	if ms[0].Get("error.message").String() != notPersisted(rsID) {
		t.Errorf("error %s", ms[0].Raw)
	}

	// Compaction: exactly one item, bound to the account.
	ms = wsTurn(t, ca, `{"type":"response.create","model":"m","store":false,`+include+`,"previous_response_id":"`+id2+`","input":[{"type":"compaction_trigger"}]}`)
	checkSeq(t, ms)
	if !equal(msgTypes(ms), []string{"response.created", "response.in_progress", "response.output_item.added",
		"response.output_item.done", "response.completed"}) {
		t.Fatalf("compaction turn %v", msgTypes(ms))
	}
	id3 := completedID(t, ms)
	cmp := itemDone(ms, "compaction")
	if out := ms[len(ms)-1].Get("response.output").Array(); len(out) != 1 || out[0].Raw != cmp.Raw {
		t.Errorf("output %s", ms[len(ms)-1].Get("response.output").Raw)
	}
	checkBlob(t, cmp.Get("encrypted_content").String())
	compacted := `{"type":"response.create","model":"m","store":false,"input":[` + cmp.Raw + `,{"role":"user","content":"next"}]}`
	ms = wsTurn(t, cb, compacted)
	checkError(t, ms[0], 400, "invalid_request_error", "invalid_encrypted_content", "")
	completedID(t, wsTurn(t, ca, compacted))

	// A store:false response lives only in its connection's cache.
	cn := openWS(t, s, "a")
	ms = wsTurn(t, cn, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id3+`","input":"x"}`)
	checkError(t, ms[0], 400, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	if resp, b := call(t, s, "a", `{"model":"m","previous_response_id":"`+id3+`","input":"x"}`); resp.StatusCode != http.StatusBadRequest ||
		gjson.GetBytes(b, "error.code").String() != "previous_response_not_found" {
		t.Errorf("HTTP continuation: %d %s", resp.StatusCode, b)
	}
	for _, c := range []*websocket.Conn{ca, cb, cn} {
		c.Close(websocket.StatusNormalClosure, "")
	}
	waitWSConns(t, s, "a", 0)
	waitWSConns(t, s, "b", 0)
}
