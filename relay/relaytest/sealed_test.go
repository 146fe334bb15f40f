package relaytest_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

const include = `"include":["file_search_call.results","reasoning.encrypted_content"]`

// checkBlob checks that blob has the shape of a Fernet token.
func checkBlob(t *testing.T, blob string) {
	t.Helper()
	b, err := base64.URLEncoding.DecodeString(blob)
	if !strings.HasPrefix(blob, "gAAAAA") || err != nil || len(b) < 1+8+16+16+32 || (len(b)-1-8-16-32)%16 != 0 || b[0] != 0x80 {
		t.Errorf("blob %q (%d bytes, %v) is not Fernet-shaped", blob, len(b), err)
	}
}

// reasoningItem is the JSON of a reasoning input item; blob "" for none.
func reasoningItem(id, blob string) string {
	if blob == "" {
		return `{"type":"reasoning","id":"` + id + `","summary":[]}`
	}
	return `{"type":"reasoning","id":"` + id + `","summary":[],"encrypted_content":"` + blob + `"}`
}

// checkAPIError checks an HTTP error answer.
func checkAPIError(t *testing.T, status int, b []byte, code, param, msg string) {
	t.Helper()
	e := gjson.GetBytes(b, "error")
	for _, k := range []string{"message", "type", "param", "code"} {
		if !e.Get(k).Exists() {
			t.Errorf("error without %q: %s", k, b)
		}
	}
	if status != 400 || e.Get("type").String() != "invalid_request_error" || e.Get("code").String() != code ||
		e.Get("param").String() != param || e.Get("message").String() != msg {
		t.Errorf("got %d %s\nwant code %q param %q message %q", status, b, code, param, msg)
	}
}

func unverified(id string) string {
	return "The encrypted content for item " + id + " could not be verified. Reason: Encrypted content could not be decrypted or parsed."
}

func notPersisted(id string) string {
	return "Item with id '" + id + "' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input."
}

func TestReasoningItemStream(t *testing.T) {
	s := newServer(t)
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"store":false,"input":"hi there",`+include+`}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	want := concat([]string{"response.created", "response.in_progress", "response.output_item.added", "response.output_item.done"},
		textTurn(5, "response.completed")[2:])
	if !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	added, done := gjson.ParseBytes(events[2].Data), gjson.ParseBytes(events[3].Data)
	id := done.Get("item.id").String()
	blob := done.Get("item.encrypted_content").String()
	if added.Get("output_index").Int() != 0 || done.Get("output_index").Int() != 0 || done.Get("item.type").String() != "reasoning" ||
		!strings.HasPrefix(id, "rs_") || done.Get("item.summary").Raw != "[]" || added.Get("item").Raw != done.Get("item").Raw {
		t.Errorf("reasoning item events:\n%s\n%s", events[2].Data, events[3].Data)
	}
	checkBlob(t, blob)
	for _, e := range events[4 : len(events)-1] {
		if gjson.GetBytes(e.Data, "output_index").Int() != 1 {
			t.Errorf("message event not at output_index 1: %s", e.Data)
		}
	}
	r := last(events).Get("response")
	if out := r.Get("output").Array(); len(out) != 2 || out[0].Raw != done.Get("item").Raw || out[1].Get("type").String() != "message" {
		t.Errorf("output %s", r.Get("output").Raw)
	}
	// 10+2 words in; 5 deltas plus 16 reasoning out.
	if u := r.Get("usage"); u.Get("input_tokens").Int() != 12 || u.Get("output_tokens").Int() != 21 ||
		u.Get("output_tokens_details.reasoning_tokens").Int() != 16 {
		t.Errorf("usage %s", u.Raw)
	}

	// JSON, and a function call answer: the reasoning item comes first.
	resp, b := call(t, s, "a", `{"model":"m","input":"go","tools":[{"type":"function","name":"f"}],`+include+`}`)
	out := gjson.GetBytes(b, "output").Array()
	if resp.StatusCode != 200 || len(out) != 2 || out[0].Get("type").String() != "reasoning" || out[1].Get("type").String() != "function_call" {
		t.Fatalf("JSON: %d %s", resp.StatusCode, b)
	}
	checkBlob(t, out[0].Get("encrypted_content").String())
	if out[0].Get("encrypted_content").String() == blob {
		t.Error("two reasoning items share a blob")
	}

	// Without the include, nothing changes.
	_, b = call(t, s, "a", `{"model":"m","input":"x","reasoning":{"effort":"low"}}`)
	if out := gjson.GetBytes(b, "output").Array(); len(out) != 1 || out[0].Get("type").String() != "message" {
		t.Errorf("output without include: %s", b)
	}
}

func TestEncryptedContentBoundToAccount(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m","store":false,"input":"think",`+include+`}`)
	item := gjson.GetBytes(b, "output.0")
	id, blob := item.Get("id").String(), item.Get("encrypted_content").String()
	body := func(blob string) string {
		return `{"model":"m","store":false,` + include + `,"input":[{"role":"user","content":"think"},` +
			`{"type":"reasoning","id":"` + id + `","summary":[],"encrypted_content":"` + blob + `"},{"role":"user","content":"more"}]}`
	}

	resp, b := call(t, s, "a", body(blob))
	if resp.StatusCode != 200 || gjson.GetBytes(b, "output.1.content.0.text").String() != "Echo: more" {
		t.Errorf("same account: %d %s", resp.StatusCode, b)
	}
	resp, b = call(t, s, "b", body(blob))
	checkAPIError(t, resp.StatusCode, b, "invalid_encrypted_content", "", unverified(id))
	if e := gjson.GetBytes(b, "error.param"); e.Type != gjson.Null {
		t.Errorf("param %s, want null", e.Raw)
	}
	for _, garbage := range []string{"gAAAAAgarbage==", "", "not base64 at all", blob[:len(blob)-8] + "AAAAAAA="} {
		resp, b = call(t, s, "a", body(garbage))
		checkAPIError(t, resp.StatusCode, b, "invalid_encrypted_content", "", unverified(id))
	}

	// stream:true: a plain JSON error, before any SSE.
	resp, b = call(t, s, "b", strings.Replace(body(blob), `"store":false`, `"store":false,"stream":true`, 1))
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	checkAPIError(t, resp.StatusCode, b, "invalid_encrypted_content", "", unverified(id))
	if sv := s.Served(); sv[len(sv)-1].Code != "invalid_encrypted_content" || sv[len(sv)-1].Account != "b" {
		t.Errorf("served %+v", sv[len(sv)-1])
	}
}

func TestReasoningItemWithoutBlob(t *testing.T) {
	s := newServer(t)
	// store:false: an item sent by id alone is never found.
	resp, b := call(t, s, "a", `{"model":"m","store":false,"input":[`+reasoningItem("rs_123", "")+`,{"role":"user","content":"x"}]}`)
	checkAPIError(t, resp.StatusCode, b, "", "input", notPersisted("rs_123"))

	// store:true: found when this account stored it.
	_, b = call(t, s, "a", `{"model":"m","input":"x",`+include+`}`)
	id := gjson.GetBytes(b, "output.0.id").String()
	withID := `{"model":"m","input":[` + reasoningItem(id, "") + `,{"role":"user","content":"y"}]}`
	if resp, b := call(t, s, "a", withID); resp.StatusCode != 200 {
		t.Errorf("stored reasoning item by id: %d %s", resp.StatusCode, b)
	}
	resp, b = call(t, s, "b", withID)
	checkAPIError(t, resp.StatusCode, b, "", "input", "Item with id '"+id+"' not found.")
	resp, b = call(t, s, "a", `{"model":"m","input":[`+reasoningItem("rs_unknown", "")+`]}`)
	checkAPIError(t, resp.StatusCode, b, "", "input", "Item with id 'rs_unknown' not found.")
	s.Reset()
	resp, b = call(t, s, "a", withID)
	checkAPIError(t, resp.StatusCode, b, "", "input", "Item with id '"+id+"' not found.")
}

func TestChainedReasoningUsage(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m","input":"one two",`+include+`}`)
	id := gjson.GetBytes(b, "id").String()
	_, b = call(t, s, "a", `{"model":"m","input":"three","previous_response_id":"`+id+`"}`)
	// 10+1 words, plus the 12 in and 21 out (reasoning included) of the first.
	if u := gjson.GetBytes(b, "usage"); u.Get("input_tokens").Int() != 44 || u.Get("input_tokens_details.cached_tokens").Int() != 12 ||
		u.Get("output_tokens_details.reasoning_tokens").Int() != 0 {
		t.Errorf("usage %s", u.Raw)
	}
	if sv := s.Served(); sv[0].Usage != (relaytest.Usage{Input: 12, Output: 21, Reasoning: 16}) {
		t.Errorf("served usage %+v", sv[0].Usage)
	}
}

func TestCompactionTrigger(t *testing.T) {
	s := newServer(t)
	history := `{"role":"user","content":"one"},{"role":"assistant","content":"Echo: one"}`
	trigger := `{"model":"m","stream":true,"store":false,` + include + `,"tools":[{"type":"function","name":"f"}],"input":[` +
		history + `,{"type":"compaction_trigger"}]}`
	_, events, err := stream(t, s, "a", trigger)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if !equal(types(events), []string{"response.created", "response.in_progress", "response.output_item.added",
		"response.output_item.done", "response.completed"}) {
		t.Fatalf("events %v", types(events))
	}
	item := gjson.GetBytes(events[3].Data, "item")
	id, blob := item.Get("id").String(), item.Get("encrypted_content").String()
	if gjson.GetBytes(events[3].Data, "output_index").Int() != 0 || item.Get("type").String() != "compaction" || !strings.HasPrefix(id, "cmp_") ||
		gjson.GetBytes(events[2].Data, "item").Raw != item.Raw {
		t.Errorf("compaction events:\n%s\n%s", events[2].Data, events[3].Data)
	}
	checkBlob(t, blob)
	if out := last(events).Get("response.output"); len(out.Array()) != 1 || out.Get("0").Raw != item.Raw {
		t.Errorf("terminal output %s", out.Raw)
	}

	s.Script("a", relaytest.Step{FunctionCall: "{}"})
	resp, b := call(t, s, "a", strings.Replace(trigger, `"stream":true`, `"stream":false`, 1))
	if out := gjson.GetBytes(b, "output").Array(); resp.StatusCode != 200 || len(out) != 1 || out[0].Get("type").String() != "compaction" {
		t.Errorf("JSON: %d %s", resp.StatusCode, b)
	}

	// The compaction item stands in for the history on later turns, on
	// its own account only.
	next := `{"model":"m","store":false,"input":[{"type":"compaction","id":"` + id + `","encrypted_content":"` + blob +
		`"},{"role":"user","content":"two"}]}`
	if resp, b := call(t, s, "a", next); resp.StatusCode != 200 || gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: two" {
		t.Errorf("same account: %d %s", resp.StatusCode, b)
	}
	resp, b = call(t, s, "b", next)
	checkAPIError(t, resp.StatusCode, b, "invalid_encrypted_content", "", unverified(id))
	// A compaction blob is not a reasoning blob.
	resp, b = call(t, s, "a", `{"model":"m","store":false,"input":[`+reasoningItem("rs_1", blob)+`]}`)
	checkAPIError(t, resp.StatusCode, b, "invalid_encrypted_content", "", unverified("rs_1"))

	// The trigger must come last.
	resp, b = call(t, s, "a", `{"model":"m","input":[{"type":"compaction_trigger"},{"role":"user","content":"x"}]}`)
	checkAPIError(t, resp.StatusCode, b, "", "input",
		"Invalid 'input[0]': a compaction_trigger item must be the last item of the input.")
}
