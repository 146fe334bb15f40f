package relay_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// statelessTurn is a Codex-style request: store=false, encrypted reasoning
// asked for, the whole history as input.
func statelessTurn(history []string) string {
	return `{"model":"gpt-test","store":false,"include":["reasoning.encrypted_content"],"input":[` + strings.Join(history, ",") + `]}`
}

func userItem(text string) string {
	return `{"type":"message","role":"user","content":"` + text + `"}`
}

// outputItems are the output items of a JSON answer.
func outputItems(t *testing.T, body []byte) []string {
	t.Helper()
	var items []string
	gjson.GetBytes(body, "output").ForEach(func(_, it gjson.Result) bool {
		items = append(items, it.Raw)
		return true
	})
	if len(items) == 0 {
		t.Fatalf("no output: %s", body)
	}
	return items
}

// blobs are the encrypted_content values of the reasoning items in a body.
func blobs(body []byte) []string {
	var out []string
	gjson.GetBytes(body, "input").ForEach(func(_, it gjson.Result) bool {
		if it.Get("type").Str == "reasoning" {
			out = append(out, it.Get("encrypted_content").Str)
		}
		return true
	})
	return out
}

// TestStatelessHistoryMoves: a stateless client (store=false, the whole
// history each turn, encrypted reasoning) kept on a sends a's reasoning
// items back to a untouched; moved to b, its history reaches b without
// any item a encrypted, and b answers 200 (b's fake upstream refuses a's
// blobs with 400 invalid_encrypted_content, so a 200 proves they are
// gone).
func TestStatelessHistoryMoves(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	session := []string{"session_id", "codex-1"}
	history := []string{userItem("one")}
	r := e.do(statelessTurn(history), session...)
	if r.status != http.StatusOK {
		t.Fatalf("turn 1: status %d: %s", r.status, r.body)
	}
	history = append(history, outputItems(t, r.body)...)
	history = append(history, userItem("two"))
	r = e.do(statelessTurn(history), session...)
	if r.status != http.StatusOK {
		t.Fatalf("turn 2: status %d: %s", r.status, r.body)
	}
	reqs := e.up.Requests()
	kept := reqs[len(reqs)-1]
	if kept.Account != "a" || len(blobs(kept.Body)) != 1 || !strings.Contains(string(kept.Body), blobs(kept.Body)[0]) {
		t.Fatalf("a did not get its reasoning item back: %s %s", kept.Account, kept.Body)
	}
	aBlobs := blobs(kept.Body)
	history = append(history, outputItems(t, r.body)...)
	history = append(history, userItem("three"))
	aBlobs = append(aBlobs, blobs([]byte(`{"input":[`+strings.Join(history, ",")+`]}`))...)

	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	r = e.do(statelessTurn(history), session...)
	if r.status != http.StatusOK {
		t.Fatalf("turn 3: status %d: %s", r.status, r.body)
	}
	reqs = e.up.Requests()
	moved := reqs[len(reqs)-1]
	if moved.Account != "b" {
		t.Fatalf("turn 3 went to %v", accountsOf(reqs))
	}
	for _, b := range aBlobs {
		if strings.Contains(string(moved.Body), b) {
			t.Fatalf("b received an item a encrypted: %s", moved.Body)
		}
	}
	for _, want := range []string{`"one"`, `"two"`, `"three"`, "Echo: one", "Echo: two"} {
		if !strings.Contains(string(moved.Body), want) {
			t.Fatalf("the moved history lost %s: %s", want, moved.Body)
		}
	}
	// One request only: the relay knew the maker, no refusal was needed.
	if n := len(reqs); n != 4 {
		t.Fatalf("%d upstream requests, want 4: %v", n, accountsOf(reqs))
	}
}

// TestCompactionStaysOnItsAccount: a compaction item decrypts only on the
// account that made it and cannot be left out: while that account cools
// down the client gets a 429 that says why, and no other account is asked
// (with the blob or without it).
func TestCompactionStaysOnItsAccount(t *testing.T) {
	e := newPriorityEnvIDs(t, "a", "b")
	r := e.do(`{"model":"gpt-test","store":false,"input":[` + userItem("long history") + `,{"type":"compaction_trigger"}]}`)
	if r.status != http.StatusOK {
		t.Fatalf("compaction: status %d: %s", r.status, r.body)
	}
	items := outputItems(t, r.body)
	if len(items) != 1 || gjson.Get(items[0], "type").Str != "compaction" {
		t.Fatalf("compaction output %v", items)
	}
	next := `{"model":"gpt-test","store":false,"input":[` + items[0] + `,` + userItem("go on") + `]}`
	// While a serves, the compacted conversation goes on there.
	if r := e.do(next); r.status != http.StatusOK {
		t.Fatalf("on a: status %d: %s", r.status, r.body)
	}
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	e.do(textReq) // benches a; b serves
	before := len(e.up.Requests())
	r = e.do(next)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if _, msg, _, _ := apiErr(t, r.body); !strings.Contains(msg, "compacted history") {
		t.Fatalf("the answer does not say why: %s", r.body)
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests for a compacted conversation whose account cools down", n)
	}
}

// TestCompactionItemsBounded: an upstream that answers a compaction with
// item after item and an empty terminal output cannot grow the turn: the
// items kept for the record stop at MaxBodyBytes, and the turn is served.
func TestCompactionItemsBounded(t *testing.T) {
	e := newEnv(t)
	store := &conversation.Memory{}
	e.h.Conversations = store
	e.h.MaxBodyBytes = 64 << 10
	var sb strings.Builder
	sb.WriteString("event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_c\",\"status\":\"in_progress\",\"output\":[]}}\n\n")
	blob := "gAAAAA" + strings.Repeat("x", 4000)
	for i := 1; i <= 200; i++ {
		sb.WriteString(`event: response.output_item.done` + "\n" + `data: {"type":"response.output_item.done","sequence_number":` + strconv.Itoa(i) +
			`,"output_index":0,"item":{"type":"compaction","id":"cmp_` + strconv.Itoa(i) + `","encrypted_content":"` + blob + `"}}` + "\n\n")
	}
	sb.WriteString("event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":201,\"response\":{\"id\":\"resp_c\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1,\"total_tokens\":2}}}\n\n")
	e.addRawAccount("raw", 0, sb.String())
	r := e.do(`{"model":"gpt-test","stream":true,"input":[{"type":"message","role":"user","content":"x"},{"type":"compaction_trigger"}]}`)
	if r.status != http.StatusOK || r.lastType() != "response.completed" {
		t.Fatalf("status %d, last %q", r.status, r.lastType())
	}
	rec, err := store.Get(context.Background(), e.subj.APIKeyID, "resp_c")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rec); n > 2*(64<<10) || !strings.Contains(string(rec), "cmp_1") || strings.Contains(string(rec), "cmp_200") {
		t.Fatalf("record of %d bytes (items kept past the bound?)", n)
	}
}

// TestSSECompactionTrigger: the trigger on a streamed turn: exactly one
// compaction item reaches the client.
func TestSSECompactionTrigger(t *testing.T) {
	e := newEnv(t, "a")
	r := e.do(`{"model":"gpt-test","stream":true,"input":[` + userItem("long") + `,{"type":"compaction_trigger"}]}`)
	n := 0
	for _, ev := range r.events {
		if ev.Type == "response.output_item.done" && gjson.GetBytes(ev.Data, "item.type").Str == "compaction" {
			n++
		}
	}
	if r.lastType() != "response.completed" || n != 1 {
		t.Fatalf("%d compaction items; last %q", n, r.lastType())
	}
}
