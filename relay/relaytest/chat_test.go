package relaytest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// chatPost posts body to the account's chat completions route.
func chatPost(t *testing.T, ctx context.Context, s *relaytest.Server, account, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL(account)+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	return s.Client().Do(req)
}

// chatJSON posts a non-streaming chat completion and returns its status
// and body.
func chatJSON(t *testing.T, s *relaytest.Server, account, body string) (int, gjson.Result) {
	t.Helper()
	resp, err := chatPost(t, context.Background(), s, account, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || !gjson.ValidBytes(b) {
		t.Fatalf("body %q: %v", b, err)
	}
	return resp.StatusCode, gjson.Parse(strings.TrimSpace(string(b)))
}

// chatLines posts a streaming chat completion and returns the data of its
// events, "[DONE]" included, and the read error.
func chatLines(t *testing.T, s *relaytest.Server, account, body string) ([]string, error) {
	t.Helper()
	resp, err := chatPost(t, context.Background(), s, account, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events, err := relaytest.ReadSSE(resp.Body)
	out := make([]string, len(events))
	for i, e := range events {
		if e.Type != "" {
			t.Errorf("line %d has event type %q", i, e.Type)
		}
		out[i] = string(e.Data)
	}
	return out, err
}

// joined concatenates path over the chunks that have it.
func joined(lines []string, path string) string {
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString(gjson.Get(l, path).String())
	}
	return sb.String()
}

const chatHello = `{"model":"gpt-5","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello there"}]}]`

func TestChatJSON(t *testing.T) {
	s := newServer(t)
	code, r := chatJSON(t, s, "a", chatHello+`}`)
	if code != 200 {
		t.Fatalf("%d %s", code, r.Raw)
	}
	id := r.Get("id").String()
	if !strings.HasPrefix(id, "chatcmpl-") || r.Get("object").String() != "chat.completion" || r.Get("model").String() != "gpt-5" ||
		r.Get("created").Int() == 0 || len(r.Get("choices").Array()) != 1 {
		t.Errorf("head: %s", r.Raw)
	}
	c := r.Get("choices.0")
	if c.Get("index").Raw != "0" || c.Get("finish_reason").String() != "stop" || c.Get("message.role").String() != "assistant" ||
		c.Get("message.content").String() != "Echo: hello there" || c.Get("message.tool_calls").Exists() ||
		c.Get("message.reasoning_content").Exists() {
		t.Errorf("choice: %s", c.Raw)
	}
	// Usage is derived as for the same conversation sent to /responses.
	resp := create(t, s, "a", `{"model":"gpt-5","instructions":"be brief","input":"hello there"}`)
	u := r.Get("usage")
	if u.Get("prompt_tokens").Int() != resp.Get("usage.input_tokens").Int() || u.Get("prompt_tokens").Int() != 14 ||
		u.Get("completion_tokens").Int() != 5 || u.Get("total_tokens").Int() != 19 ||
		u.Get("prompt_tokens_details.cached_tokens").Raw != "0" || u.Get("completion_tokens_details.reasoning_tokens").Raw != "0" {
		t.Errorf("usage: %s", u.Raw)
	}
	reqs, served := s.Requests(), s.Served()
	if len(reqs) != 2 || reqs[0].Path != "/a/v1/chat/completions" || reqs[0].Account != "a" {
		t.Errorf("requests %+v", reqs)
	}
	want := relaytest.Usage{Input: 14, Output: 5}
	if len(served) != 2 || served[0].ResponseID != id || served[0].Status != "completed" || served[0].HTTPStatus != 200 ||
		served[0].Usage != want || served[0].Events != 0 {
		t.Errorf("served %+v", served)
	}
	// The unprefixed route is the account "".
	if code, r = chatJSON(t, s, "", `{"model":"m","messages":[{"role":"user","content":"x"}]}`); code != 200 ||
		r.Get("choices.0.message.content").String() != "Echo: x" || s.Served()[2].Account != "" {
		t.Errorf("account \"\": %d %s", code, r.Raw)
	}
	// Step.Usage replaces the counts.
	s.Script("a", relaytest.Step{Usage: &relaytest.Usage{Input: 7, Cached: 3, Output: 9, Reasoning: 2}})
	_, r = chatJSON(t, s, "a", chatHello+`}`)
	if u := r.Get("usage"); u.Raw != `{"prompt_tokens":7,"completion_tokens":9,"total_tokens":16,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}` {
		t.Errorf("scripted usage: %s", u.Raw)
	}
}

func TestChatStream(t *testing.T) {
	s := newServer(t)
	lines, err := chatLines(t, s, "a", chatHello+`,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	// Role, 5 pieces, finish, [DONE]; no usage anywhere.
	if len(lines) != 8 || lines[7] != "[DONE]" {
		t.Fatalf("lines %q", lines)
	}
	id := gjson.Get(lines[0], "id").String()
	for i, l := range lines[:7] {
		r := gjson.Parse(l)
		if r.Get("id").String() != id || r.Get("object").String() != "chat.completion.chunk" || r.Get("model").String() != "gpt-5" ||
			r.Get("usage").Exists() || r.Get("choices.0.index").Raw != "0" {
			t.Errorf("chunk %d: %s", i, l)
		}
	}
	if d := gjson.Get(lines[0], "choices.0.delta"); d.Get("role").String() != "assistant" || d.Get("content").Raw != `""` {
		t.Errorf("first chunk: %s", lines[0])
	}
	if got := joined(lines[1:6], "choices.0.delta.content"); got != "Echo: hello there" {
		t.Errorf("content %q", got)
	}
	if f := gjson.Get(lines[6], "choices.0"); f.Get("finish_reason").String() != "stop" || f.Get("delta").Raw != "{}" {
		t.Errorf("finish chunk: %s", lines[6])
	}
	sv := s.Served()[0]
	if sv.Status != "completed" || sv.Events != 8 || sv.Usage != (relaytest.Usage{}) || sv.ResponseID != id {
		t.Errorf("served %+v", sv)
	}

	// include_usage: usage null in every chunk, then a usage chunk.
	lines, err = chatLines(t, s, "a", chatHello+`,"stream":true,"stream_options":{"include_usage":true}}`)
	if err != nil || len(lines) != 9 || lines[8] != "[DONE]" {
		t.Fatalf("lines %q, %v", lines, err)
	}
	for i, l := range lines[:7] {
		if gjson.Get(l, "usage").Raw != "null" {
			t.Errorf("chunk %d: %s", i, l)
		}
	}
	u := gjson.Parse(lines[7])
	if u.Get("choices").Raw != "[]" || u.Get("usage.prompt_tokens").Int() != 14 || u.Get("usage.completion_tokens").Int() != 5 {
		t.Errorf("usage chunk: %s", lines[7])
	}
	if sv := s.Served()[1]; sv.Status != "completed" || sv.Usage != (relaytest.Usage{Input: 14, Output: 5}) {
		t.Errorf("served %+v", sv)
	}

	// "nousage": asked for, the usage chunk still does not come.
	s.Script("a", relaytest.Step{Events: "nousage"})
	lines, err = chatLines(t, s, "a", chatHello+`,"stream":true,"stream_options":{"include_usage":true}}`)
	if err != nil || len(lines) != 8 || lines[7] != "[DONE]" || gjson.Get(lines[6], "choices.0.finish_reason").String() != "stop" ||
		strings.Contains(strings.Join(lines, ""), "prompt_tokens") {
		t.Fatalf("nousage lines %q, %v", lines, err)
	}
	if sv := s.Served()[2]; sv.Status != "completed" || sv.Usage != (relaytest.Usage{}) {
		t.Errorf("nousage served %+v", sv)
	}

	// Deltas and the SSE framing options apply as on the Responses stream.
	s.Script("a", relaytest.Step{Deltas: 2, Events: "crlf multiline comments", EventPadding: -1})
	lines, err = chatLines(t, s, "a", chatHello+`,"stream":true}`)
	if err != nil || len(lines) != 5 || joined(lines, "choices.0.delta.content") != "Echo: hello there" ||
		gjson.Get(lines[1], "obfuscation").Raw != `""` {
		t.Errorf("lines %q, %v", lines, err)
	}
	lines, _ = chatLines(t, s, "a", chatHello+`,"stream":true,"stream_options":{"include_obfuscation":false}}`)
	if strings.Contains(strings.Join(lines, ""), "obfuscation") {
		t.Errorf("include_obfuscation false: %q", lines)
	}
}

func TestChatToolCall(t *testing.T) {
	s := newServer(t)
	const tools = `"tools":[{"type":"custom","custom":{"name":"c"}},{"type":"function","function":{"name":"lookup","parameters":{}}},{"type":"function","function":{"name":"other"}}]`
	body := `{"model":"m",` + tools + `,"messages":[{"role":"user","content":"find it"}]`
	_, r := chatJSON(t, s, "a", body+`}`)
	c := r.Get("choices.0")
	call := c.Get("message.tool_calls.0")
	if c.Get("finish_reason").String() != "tool_calls" || c.Get("message.content").Raw != "null" ||
		len(c.Get("message.tool_calls").Array()) != 1 || !strings.HasPrefix(call.Get("id").String(), "call_") ||
		call.Get("type").String() != "function" || call.Get("function.name").String() != "lookup" ||
		call.Get("function.arguments").String() != `{"input":"find it"}` {
		t.Errorf("tool call: %s", c.Raw)
	}

	lines, err := chatLines(t, s, "a", body+`,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	start := gjson.Get(lines[1], "choices.0.delta.tool_calls.0")
	if gjson.Get(lines[0], "choices.0.delta.content").Raw != "null" || start.Get("index").Raw != "0" ||
		!strings.HasPrefix(start.Get("id").String(), "call_") || start.Get("type").String() != "function" ||
		start.Get("function.name").String() != "lookup" || start.Get("function.arguments").String() != "" {
		t.Errorf("start: %s / %s", lines[0], lines[1])
	}
	frags := lines[2 : len(lines)-2]
	for _, f := range frags {
		tc := gjson.Get(f, "choices.0.delta.tool_calls.0")
		if tc.Get("index").Raw != "0" || tc.Get("id").Exists() || tc.Get("function.name").Exists() {
			t.Errorf("fragment %s", f)
		}
	}
	if len(frags) != 5 || joined(frags, "choices.0.delta.tool_calls.0.function.arguments") != `{"input":"find it"}` ||
		gjson.Get(lines[len(lines)-2], "choices.0.finish_reason").String() != "tool_calls" {
		t.Errorf("lines %q", lines)
	}

	// tool_choice: none answers text, a named function is the one called.
	if _, r = chatJSON(t, s, "a", body+`,"tool_choice":"none"}`); r.Get("choices.0.message.content").String() != "Echo: find it" {
		t.Errorf("tool_choice none: %s", r.Raw)
	}
	_, r = chatJSON(t, s, "a", body+`,"tool_choice":{"type":"function","function":{"name":"other"}}}`)
	if r.Get("choices.0.message.tool_calls.0.function.name").String() != "other" {
		t.Errorf("named tool_choice: %s", r.Raw)
	}
	// Step.FunctionCall scripts the call, as on the create path.
	s.Script("a", relaytest.Step{FunctionCall: `{"name":"f","arguments":"{}","call_id":"call_fixed"}`})
	_, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"x"}]}`)
	if r.Get("choices.0.message.tool_calls.0").Raw != `{"id":"call_fixed","type":"function","function":{"name":"f","arguments":"{}"}}` {
		t.Errorf("scripted call: %s", r.Raw)
	}
}

func TestChatToolAnswer(t *testing.T) {
	s := newServer(t)
	body := `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[
		{"role":"user","content":"weather?"},
		{"role":"assistant","content":null,"tool_calls":[
			{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"city\": \"Paris\"}"}},
			{"id":"call_2","type":"function","function":{"name":"f","arguments":"{}"}}]},
		{"role":"tool","tool_call_id":"call_2","content":"cloudy"},
		{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"sunny and warm"}]}]}`
	code, r := chatJSON(t, s, "a", body)
	if code != 200 || r.Get("choices.0.message.content").String() != "Function output received: sunny and warm" ||
		r.Get("choices.0.finish_reason").String() != "stop" {
		t.Errorf("%d %s", code, r.Raw)
	}
	// Words: weather? (1), both arguments (2 + 1), cloudy (1), sunny and warm (3).
	if n := r.Get("usage.prompt_tokens").Int(); n != 18 {
		t.Errorf("prompt_tokens %d, want 18", n)
	}
}
