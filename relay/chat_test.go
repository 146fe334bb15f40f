package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// newChatEnv: account "c" speaks Chat Completions (the fake's chat route).
func newChatEnv(t *testing.T) *env {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "c", WireAPI: "chat"})
	return e
}

func TestChatJSON(t *testing.T) {
	e := newChatEnv(t)
	r := e.do(textReq)
	if r.status != 200 || gjson.GetBytes(r.body, "object").Str != "response" || gjson.GetBytes(r.body, "status").Str != "completed" ||
		!strings.Contains(gjson.GetBytes(r.body, "output").Raw, "Echo: hello there") || !strings.HasPrefix(jsonField(r.body, "id"), "resp_") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	q := e.lastRequest("c")
	if !strings.HasSuffix(q.Path, "/chat/completions") || gjson.GetBytes(q.Body, "messages.0.content").Str != "hello there" {
		t.Fatalf("upstream got %s %s", q.Path, q.Body)
	}
	served := e.up.Served()
	u := served[len(served)-1].Usage
	recs := e.sink.all()
	if len(recs) != 1 || recs[0].InputTokens != u.Input || recs[0].OutputTokens != u.Output || recs[0].Status != billing.StatusCompleted ||
		gjson.GetBytes(r.body, "usage.input_tokens").Int() != u.Input {
		t.Fatalf("usage %+v, upstream %+v, answer %s", recs, u, gjson.GetBytes(r.body, "usage").Raw)
	}
}

func TestChatStream(t *testing.T) {
	e := newChatEnv(t)
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.completed" {
		t.Fatalf("status %d, last %q", r.status, r.lastType())
	}
	for i, ev := range r.events {
		if seq := gjson.GetBytes(ev.Data, "sequence_number").Int(); seq != int64(i) {
			t.Fatalf("event %d has sequence number %d", i, seq)
		}
	}
	var text strings.Builder
	for _, ev := range r.events {
		if ev.Type == "response.output_text.delta" {
			text.WriteString(gjson.GetBytes(ev.Data, "delta").Str)
		}
	}
	if text.String() != "Echo: hello there" {
		t.Fatalf("deltas %q", text.String())
	}
	if q := e.lastRequest("c"); !gjson.GetBytes(q.Body, "stream_options.include_usage").Bool() {
		t.Fatalf("include_usage not asked: %s", q.Body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].OutputTokens == 0 || recs[0].Status != billing.StatusCompleted {
		t.Fatalf("records %+v", recs)
	}
}

// TestChatChain: a chat upstream keeps no state: each turn of a
// previous_response_id chain reaches it with the whole history.
func TestChatChain(t *testing.T) {
	e := newChatEnv(t)
	prev := ""
	for i, want := range []int{1, 3, 5} {
		r := e.do(chainReq(prev, fmt.Sprintf("turn %d", i+1)))
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i+1, r.status, r.body)
		}
		prev = jsonField(r.body, "id")
		q := e.lastRequest("c")
		if n := len(gjson.GetBytes(q.Body, "messages").Array()); n != want || gjson.GetBytes(q.Body, "previous_response_id").Exists() {
			t.Fatalf("turn %d: %d messages: %s", i+1, n, q.Body)
		}
	}
	// A chain the relay never recorded cannot be served by a chat account.
	r := e.do(chainReq("resp_unknown", "x"))
	if _, _, _, code := apiErr(t, r.body); r.status != 400 || code != "previous_response_not_found" {
		t.Fatalf("unknown chain: %d %s", r.status, r.body)
	}
}

// TestChatFunctionCall: a function call comes back as a function_call
// item whose call_id is the upstream's; its output chains back as a tool
// message after the assistant's tool_calls.
func TestChatFunctionCall(t *testing.T) {
	e := newChatEnv(t)
	tools := `"tools":[{"type":"function","name":"lookup","description":"d","parameters":{"type":"object","properties":{}}}]`
	r := e.do(`{"model":"gpt-test","input":"find it",` + tools + `}`)
	call := gjson.GetBytes(r.body, `output.#(type=="function_call")`)
	if r.status != 200 || call.Get("name").Str != "lookup" || !strings.HasPrefix(call.Get("call_id").Str, "call_") {
		t.Fatalf("call: %d %s", r.status, r.body)
	}
	r = e.do(`{"model":"gpt-test","previous_response_id":"` + jsonField(r.body, "id") + `",` + tools +
		`,"input":[{"type":"function_call_output","call_id":"` + call.Get("call_id").Str + `","output":"42"}]}`)
	if r.status != 200 || !strings.Contains(string(r.body), "42") {
		t.Fatalf("after the output: %d %s", r.status, r.body)
	}
	q := e.lastRequest("c")
	if gjson.GetBytes(q.Body, "messages.1.tool_calls.0.id").Str != call.Get("call_id").Str || gjson.GetBytes(q.Body, "messages.2.role").Str != "tool" {
		t.Fatalf("upstream messages %s", gjson.GetBytes(q.Body, "messages").Raw)
	}
}

func TestChatIncompleteAndRefusals(t *testing.T) {
	e := newChatEnv(t)
	r := e.do(`{"model":"gpt-test","max_output_tokens":2,"input":"a long answer please"}`)
	if gjson.GetBytes(r.body, "status").Str != "incomplete" || gjson.GetBytes(r.body, "incomplete_details.reason").Str != "max_output_tokens" {
		t.Fatalf("length: %d %s", r.status, r.body)
	}
	before := len(e.up.Requests())
	r = e.do(`{"model":"gpt-test","input":"x","tools":[{"type":"web_search"}]}`)
	if _, msg, _, _ := apiErr(t, r.body); r.status != 400 || !strings.Contains(msg, "web_search") {
		t.Fatalf("built-in tool: %d %s", r.status, r.body)
	}
	if n := len(e.up.Requests()) - before; n != 0 {
		t.Fatalf("%d upstream requests for a refused body", n)
	}
}

// TestChatFailover: a chat account's 429 moves the turn to a Responses
// account like any other failure.
func TestChatFailover(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "c", WireAPI: "chat", Priority: 0})
	e.addAccount(&scheduler.Account{ID: "r", Priority: 1})
	e.up.Script("c", relaytest.Step{Status: 429})
	for _, body := range []string{textReq, streamReq} {
		r := e.do(body)
		if r.status != 200 || !strings.Contains(string(r.body), "Echo: hello there") {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		e.up.Script("c", relaytest.Step{Status: 429})
	}
	if q := e.lastRequest("r"); !strings.HasSuffix(q.Path, "/responses") {
		t.Fatalf("r got %s", q.Path)
	}
}

// TestChatStreamWithoutUsage: a chat stream that ends without its usage
// chunk is recorded upstream_error, never as a free turn.
func TestChatStreamWithoutUsage(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}`+"\n\n")
		fmt.Fprint(w, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: "raw", WireAPI: "chat", BaseURL: srv.URL + "/v1"})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.completed" {
		t.Fatalf("status %d, last %q", r.status, r.lastType())
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}

// TestChatStreamCutShort: a chat stream that ends after output but before
// its finish_reason ends the client's stream with one response.failed,
// and the turn is recorded upstream_error, as a Responses stream's EOF is,
// not failed as if the upstream had answered so.
func TestChatStreamCutShort(t *testing.T) {
	e := newChatEnv(t)
	e.up.Script("c", relaytest.Step{End: "none"})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.failed" || countType(r, "response.failed") != 1 ||
		gjson.GetBytes(r.events[len(r.events)-1].Data, "response.error.code").Str != "stream_error" {
		t.Fatalf("status %d, last %q: %s", r.status, r.lastType(), r.body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}

// TestChatWebSocket: WebSocket turns on a chat account get the same
// events as frames; two chained turns, the second with the whole history.
func TestChatWebSocket(t *testing.T) {
	e := newWSEnv(t, false)
	e.addAccount(&scheduler.Account{ID: "c", WireAPI: "chat"})
	c := e.dial()
	c.send(create(``))
	f := c.recvTurn()
	if typeOf(last(f)) != "response.completed" {
		t.Fatalf("turn 1: %v", f)
	}
	for i, fr := range f {
		if seq := gjson.Get(fr, "sequence_number").Int(); seq != int64(i) {
			t.Fatalf("frame %d has sequence number %d", i, seq)
		}
	}
	c.send(create(`,"previous_response_id":"` + gjson.Get(last(f), "response.id").Str + `"`))
	if g := c.recvTurn(); typeOf(last(g)) != "response.completed" {
		t.Fatalf("turn 2: %v", g)
	}
	q := lastMessage(t, e.up, "c")
	if n := len(gjson.GetBytes(q, "messages").Array()); n != 3 {
		t.Fatalf("turn 2 reached the chat upstream with %d messages: %s", n, q)
	}
}

// TestChatFailoverAfterRefusal: an error chunk before any output is a
// refusal: the turn moves to the next account and is recorded as that
// account served it.
func TestChatFailoverAfterRefusal(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"error":{"message":"overloaded","type":"server_error","code":"server_is_overloaded"}}`+"\n\n")
	}))
	t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: "raw", WireAPI: "chat", BaseURL: srv.URL + "/v1", Priority: 0})
	e.addAccount(&scheduler.Account{ID: "c", WireAPI: "chat", Priority: 1})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.completed" {
		t.Fatalf("status %d, last %q: %s", r.status, r.lastType(), r.body)
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].AccountID != "c" || recs[0].Status != billing.StatusCompleted || recs[0].Attempts != 2 {
		t.Fatalf("records %+v", recs)
	}
}

// TestChatJSONSchema: a Responses text.format json_schema reaches the
// chat upstream as response_format, and its JSON answer comes back as the
// output text.
func TestChatJSONSchema(t *testing.T) {
	e := newChatEnv(t)
	r := e.do(`{"model":"gpt-test","input":"hello there","text":{"format":{"type":"json_schema","name":"echo","strict":true,"schema":{"type":"object","properties":{"echo":{"type":"string"}}}}}}`)
	text := gjson.GetBytes(r.body, `output.#(type=="message").content.0.text`).Str
	if r.status != 200 || gjson.Get(text, "echo").Str != "Echo: hello there" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	q := e.lastRequest("c")
	if f := gjson.GetBytes(q.Body, "response_format"); f.Get("type").Str != "json_schema" || f.Get("json_schema.name").Str != "echo" || !f.Get("json_schema.strict").Bool() {
		t.Fatalf("response_format %s", f.Raw)
	}
}

// TestChatStreamEqualsJSON: the response a streamed chat turn ends with is
// the one the same turn answers as JSON (output and usage).
func TestChatStreamEqualsJSON(t *testing.T) {
	e := newChatEnv(t)
	j := e.do(textReq)
	s := e.do(streamReq)
	final := gjson.GetBytes(s.events[len(s.events)-1].Data, "response")
	strip := func(v gjson.Result) string { // ids are the relay's own per response
		out := v.Get("output").Raw
		for _, id := range []string{v.Get("output.0.id").Str} {
			out = strings.ReplaceAll(out, id, "ID")
		}
		return out
	}
	jr := gjson.ParseBytes(j.body)
	if strip(final) != strip(jr) || final.Get("usage").Raw != jr.Get("usage").Raw {
		t.Fatalf("stream ended with\n%s %s\nJSON answered\n%s %s", strip(final), final.Get("usage").Raw, strip(jr), jr.Get("usage").Raw)
	}
}

// TestChatStreamBounded: a chat upstream that streams without end cannot
// grow the relay: past MaxEventBytes of output (the terminal event holds
// it all) the stream is broken, the client gets one response.failed.
func TestChatStreamBounded(t *testing.T) {
	e := newEnv(t)
	e.h.MaxEventBytes = 64 << 10
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		piece := strings.Repeat("x", 1000)
		for i := 0; i < 10000 && r.Context().Err() == nil; i++ {
			if _, err := fmt.Fprintf(w, `data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}`+"\n\n", piece); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: "raw", WireAPI: "chat", BaseURL: srv.URL + "/v1"})
	r := e.do(streamReq)
	if r.status != 200 || r.lastType() != "response.failed" || countType(r, "response.failed") != 1 {
		t.Fatalf("status %d, last %q", r.status, r.lastType())
	}
	if recs := e.sink.all(); len(recs) != 1 || recs[0].Status != billing.StatusUpstreamError {
		t.Fatalf("records %+v", recs)
	}
}

// TestChatEchoes: a chat account's answer repeats the request's settings
// as the Responses API does, JSON and streamed alike.
func TestChatEchoes(t *testing.T) {
	e := newChatEnv(t)
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":"gpt-test","input":"hi","instructions":"be brief","max_output_tokens":50,"stream":%t}`, stream)
		r := e.do(body)
		obj := r.body
		if stream {
			obj = []byte(gjson.GetBytes(r.events[len(r.events)-1].Data, "response").Raw)
		}
		if r.status != 200 || gjson.GetBytes(obj, "instructions").Str != "be brief" || gjson.GetBytes(obj, "max_output_tokens").Int() != 50 ||
			gjson.GetBytes(obj, "tool_choice").Str != "auto" || !gjson.GetBytes(obj, "tools").IsArray() {
			t.Fatalf("stream %t: status %d: %s", stream, r.status, obj)
		}
	}
}
