package relaytest_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

const testKey = "sk-test-0123456789abcdef"

func newServer(t *testing.T) *relaytest.Server {
	t.Helper()
	s := relaytest.NewServer()
	t.Cleanup(s.Close)
	return s
}

// send posts body to the account's responses endpoint.
func send(t *testing.T, ctx context.Context, s *relaytest.Server, account, body string, hdr ...string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL(account)+"/responses", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	return s.Client().Do(req)
}

// call posts body and returns the status and the whole body.
func call(t *testing.T, s *relaytest.Server, account, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, err := send(t, context.Background(), s, account, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, b
}

// stream posts a streaming body and parses the SSE answer.
func stream(t *testing.T, s *relaytest.Server, account, body string) (*http.Response, []relaytest.Event, error) {
	t.Helper()
	resp, err := send(t, context.Background(), s, account, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, err := relaytest.ReadSSE(resp.Body)
	return resp, events, err
}

func types(events []relaytest.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// checkEvents checks the invariants every event must hold: the event: name
// equals the JSON type, and sequence numbers count from 0.
func checkEvents(t *testing.T, events []relaytest.Event) {
	t.Helper()
	for i, e := range events {
		if !gjson.ValidBytes(e.Data) {
			t.Fatalf("event %d: invalid JSON %q", i, e.Data)
		}
		if got := gjson.GetBytes(e.Data, "type").String(); got != e.Type {
			t.Errorf("event %d: event name %q, JSON type %q", i, e.Type, got)
		}
		if got := gjson.GetBytes(e.Data, "sequence_number"); got.Type != gjson.Number || got.Int() != int64(i) {
			t.Errorf("event %d (%s): sequence_number %s", i, e.Type, got.Raw)
		}
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// textTurn is the event order of a text answer; terminal "" for none.
func textTurn(deltas int, terminal string) []string {
	out := concat([]string{"response.created", "response.in_progress", "response.output_item.added",
		"response.content_part.added"}, repeat("response.output_text.delta", deltas),
		[]string{"response.output_text.done", "response.content_part.done", "response.output_item.done"})
	if terminal != "" {
		out = append(out, terminal)
	}
	return out
}

func fcTurn(deltas int) []string {
	return concat([]string{"response.created", "response.in_progress", "response.output_item.added"},
		repeat("response.function_call_arguments.delta", deltas),
		[]string{"response.function_call_arguments.done", "response.output_item.done", "response.completed"})
}

func last(events []relaytest.Event) gjson.Result {
	return gjson.ParseBytes(events[len(events)-1].Data)
}

func TestTextStream(t *testing.T) {
	s := newServer(t)
	resp, events, err := stream(t, s, "acct", `{"model":"gpt-5","stream":true,"input":[{"role":"user","content":[{"type":"input_text","text":"hello world"}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if id := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(id, "req_") {
		t.Errorf("x-request-id %q", id)
	}
	for _, h := range []string{"Openai-Processing-Ms", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Tokens"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	if want := textTurn(5, "response.completed"); !equal(types(events), want) {
		t.Fatalf("events\n%v\nwant\n%v", types(events), want)
	}
	checkEvents(t, events)

	created := gjson.ParseBytes(events[0].Data)
	if created.Get("response.status").String() != "in_progress" || created.Get("response.usage").Type != gjson.Null {
		t.Errorf("response.created: %s", events[0].Data)
	}
	id := created.Get("response.id").String()
	if len(id) != len("resp_")+32 || !strings.HasPrefix(id, "resp_") {
		t.Errorf("response id %q", id)
	}
	added := gjson.ParseBytes(events[2].Data)
	itemID := added.Get("item.id").String()
	if !strings.HasPrefix(itemID, "msg_") || added.Get("item.status").String() != "in_progress" || added.Get("item.type").String() != "message" {
		t.Errorf("output_item.added: %s", events[2].Data)
	}
	var text strings.Builder
	for _, e := range events[4:9] {
		d := gjson.ParseBytes(e.Data)
		for _, f := range []string{"delta", "item_id", "output_index", "content_index", "logprobs", "obfuscation"} {
			if !d.Get(f).Exists() {
				t.Errorf("delta without %s: %s", f, e.Data)
			}
		}
		if d.Get("item_id").String() != itemID {
			t.Errorf("delta item_id %s", d.Get("item_id"))
		}
		text.WriteString(d.Get("delta").String())
	}
	if text.String() != "Echo: hello world" {
		t.Errorf("deltas add up to %q", text.String())
	}
	if got := gjson.GetBytes(events[9].Data, "text").String(); got != text.String() {
		t.Errorf("output_text.done text %q", got)
	}
	done := last(events)
	if done.Get("response.id").String() != id || done.Get("response.status").String() != "completed" ||
		done.Get("response.model").String() != "gpt-5" ||
		done.Get("response.output.0.content.0.text").String() != "Echo: hello world" {
		t.Errorf("response.completed: %s", done.Raw)
	}
	// "hello world" is 2 words: 10+2 in, 5 deltas out.
	u := done.Get("response.usage")
	if u.Get("input_tokens").Int() != 12 || u.Get("output_tokens").Int() != 5 || u.Get("total_tokens").Int() != 17 ||
		u.Get("input_tokens_details.cached_tokens").Int() != 0 || u.Get("output_tokens_details.reasoning_tokens").Int() != 0 {
		t.Errorf("usage %s", u.Raw)
	}

	served := s.Served()
	want := relaytest.Served{Account: "acct", RequestID: resp.Header.Get("X-Request-Id"), ResponseID: id, Model: "gpt-5",
		Stream: true, HTTPStatus: 200, Status: "completed", Usage: relaytest.Usage{Input: 12, Output: 5}, Events: len(events)}
	if len(served) != 1 || served[0] != want {
		t.Errorf("served %+v\nwant %+v", served, want)
	}
}

func TestNonStreaming(t *testing.T) {
	s := newServer(t)
	resp, body := call(t, s, "", `{"model":"gpt-5-mini","input":"Say hi","store":false,"service_tier":"auto","instructions":"Be brief"}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	r := gjson.ParseBytes(body)
	checks := map[string]string{
		"object":                     "response",
		"status":                     "completed",
		"model":                      "gpt-5-mini",
		"error":                      "",
		"incomplete_details":         "",
		"output.0.type":              "message",
		"output.0.role":              "assistant",
		"output.0.status":            "completed",
		"output.0.content.0.type":    "output_text",
		"output.0.content.0.text":    "Echo: Say hi",
		"service_tier":               "default",
		"store":                      "false",
		"instructions":               "Be brief",
		"previous_response_id":       "",
		"usage.input_tokens":         "14", // 10 + "Say hi" + "Be brief"
		"usage.output_tokens":        "5",
		"usage.total_tokens":         "19",
		"usage.input_tokens_details": `{"cached_tokens":0}`,
	}
	for path, want := range checks {
		if got := r.Get(path).String(); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if !strings.HasPrefix(r.Get("id").String(), "resp_") || r.Get("created_at").Int() == 0 {
		t.Errorf("id/created_at: %s", body)
	}
	if served := s.Served(); len(served) != 1 || served[0].Status != "completed" || served[0].Events != 0 || served[0].Stream {
		t.Errorf("served %+v", served)
	}
}

func TestFunctionCallTurns(t *testing.T) {
	s := newServer(t)
	const tools = `"tools":[{"type":"web_search"},{"type":"function","name":"get_weather","parameters":{"type":"object"}}]`
	_, events, err := stream(t, s, "a", `{"model":"gpt-5","stream":true,`+tools+`,"input":"weather in Paris?"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	// {"input":"weather in Paris?"} has more than 5 characters: 5 deltas.
	if want := fcTurn(5); !equal(types(events), want) {
		t.Fatalf("events\n%v\nwant\n%v", types(events), want)
	}
	added := gjson.ParseBytes(events[2].Data).Get("item")
	if !strings.HasPrefix(added.Get("id").String(), "fc_") || added.Get("type").String() != "function_call" ||
		added.Get("name").String() != "get_weather" || added.Get("arguments").String() != "" ||
		!strings.HasPrefix(added.Get("call_id").String(), "call_") {
		t.Errorf("output_item.added %s", added.Raw)
	}
	var args strings.Builder
	for _, e := range events[3:8] {
		args.WriteString(gjson.GetBytes(e.Data, "delta").String())
	}
	if args.String() != `{"input":"weather in Paris?"}` || gjson.GetBytes(events[8].Data, "arguments").String() != args.String() {
		t.Errorf("arguments %q, done %s", args.String(), events[8].Data)
	}
	first := last(events).Get("response")
	callID := first.Get("output.0.call_id").String()
	if first.Get("output.0.arguments").String() != args.String() || callID != added.Get("call_id").String() {
		t.Errorf("completed output %s", first.Get("output").Raw)
	}
	// 10 + 3 words in; 5 deltas out.
	if first.Get("usage.input_tokens").Int() != 13 || first.Get("usage.output_tokens").Int() != 5 {
		t.Errorf("usage %s", first.Get("usage").Raw)
	}

	// Continue with the tool output: a text answer quoting it, with the
	// previous input counted as cached.
	body := `{"model":"gpt-5","stream":true,` + tools + `,"previous_response_id":"` + first.Get("id").String() +
		`","input":[{"type":"function_call_output","call_id":"` + callID + `","output":"sunny, 21 C"}]}`
	_, events, err = stream(t, s, "a", body)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := textTurn(5, "response.completed"); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	second := last(events).Get("response")
	if got := second.Get("output.0.content.0.text").String(); got != "Function output received: sunny, 21 C" {
		t.Errorf("text %q", got)
	}
	if second.Get("previous_response_id").String() != first.Get("id").String() {
		t.Errorf("previous_response_id %s", second.Get("previous_response_id").Raw)
	}
	// 10 + 3 words + previous 13 in + 5 out = 31; cached = previous input.
	u := second.Get("usage")
	if u.Get("input_tokens").Int() != 31 || u.Get("input_tokens_details.cached_tokens").Int() != 13 {
		t.Errorf("usage %s", u.Raw)
	}

	// The same call_id in the input itself (no chaining) is also accepted.
	body = `{"model":"gpt-5",` + tools + `,"store":false,"input":[{"role":"user","content":"weather?"},` +
		`{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{}"},` +
		`{"type":"function_call_output","call_id":"call_1","output":"rain"}]}`
	resp, b := call(t, s, "a", body)
	if resp.StatusCode != 200 || gjson.GetBytes(b, "output.0.content.0.text").String() != "Function output received: rain" {
		t.Errorf("inline call: %d %s", resp.StatusCode, b)
	}

	// Forced function call with given fields, and few characters: one delta
	// per character at most.
	s.Script("a", relaytest.Step{FunctionCall: &relaytest.FunctionCall{Name: "f", Arguments: "{}", CallID: "call_x"}})
	_, events, err = stream(t, s, "a", `{"model":"gpt-5","stream":true,"input":"hi"}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := fcTurn(2); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	fc := last(events).Get("response.output.0")
	if fc.Get("name").String() != "f" || fc.Get("call_id").String() != "call_x" || fc.Get("arguments").String() != "{}" {
		t.Errorf("forced call %s", fc.Raw)
	}
}

func TestPreviousResponsePerAccount(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m","input":"one"}`)
	id := gjson.GetBytes(b, "id").String()

	resp, b := call(t, s, "a", `{"model":"m","input":"two","previous_response_id":"`+id+`"}`)
	if resp.StatusCode != 200 || gjson.GetBytes(b, "previous_response_id").String() != id {
		t.Fatalf("same account: %d %s", resp.StatusCode, b)
	}

	resp, b = call(t, s, "b", `{"model":"m","input":"two","previous_response_id":"`+id+`"}`)
	e := gjson.GetBytes(b, "error")
	if resp.StatusCode != 400 || e.Get("code").String() != "previous_response_not_found" ||
		e.Get("param").String() != "previous_response_id" || e.Get("type").String() != "invalid_request_error" ||
		e.Get("message").String() != "Previous response with id '"+id+"' not found." {
		t.Fatalf("other account: %d %s", resp.StatusCode, b)
	}
	served := s.Served()
	if got := served[len(served)-1]; got.Status != "error" || got.Code != "previous_response_not_found" || got.HTTPStatus != 400 || got.Account != "b" {
		t.Errorf("served %+v", got)
	}

	// store:false responses cannot be continued.
	_, b = call(t, s, "a", `{"model":"m","input":"x","store":false}`)
	resp, _ = call(t, s, "a", `{"model":"m","input":"y","previous_response_id":"`+gjson.GetBytes(b, "id").String()+`"}`)
	if resp.StatusCode != 400 {
		t.Errorf("chaining a store:false response: %d", resp.StatusCode)
	}
}

func TestValidationErrors(t *testing.T) {
	s := newServer(t)
	s.SetKey("pinned", "sk-right-key-1234567890")
	s.Script("fc", relaytest.Step{FunctionCall: &relaytest.FunctionCall{}})
	_, b := call(t, s, "fc", `{"model":"m","input":"go"}`)
	fcResp := gjson.GetBytes(b, "id").String()

	cases := []struct {
		name, account, body string
		hdr                 []string
		status              int
		typ, param, code    string
		msg                 string
	}{
		{"no auth", "", `{"model":"m"}`, []string{"Authorization", ""}, 401, "authentication_error", "", "", "You didn't provide an API key"},
		{"not bearer", "", `{"model":"m"}`, []string{"Authorization", "Basic abc"}, 401, "authentication_error", "", "", ""},
		{"wrong key", "pinned", `{"model":"m"}`, []string{"Authorization", "Bearer sk-wrong-key-abcdefghij"}, 401, "authentication_error", "", "invalid_api_key", "Incorrect API key provided: sk-wro...ghij."},
		{"empty body", "", ``, nil, 400, "invalid_request_error", "", "", "We could not parse the JSON body"},
		{"not json", "", `{"model":`, nil, 400, "invalid_request_error", "", "", "We could not parse the JSON body"},
		{"no model", "", `{"input":"x"}`, nil, 400, "invalid_request_error", "model", "missing_required_parameter", "Missing required parameter: 'model'."},
		{"model not string", "", `{"model":5}`, nil, 400, "invalid_request_error", "model", "invalid_type", ""},
		{"stream not bool", "", `{"model":"m","stream":"yes"}`, nil, 400, "invalid_request_error", "stream", "invalid_type", ""},
		{"orphan output", "", `{"model":"m","input":[{"type":"function_call_output","call_id":"call_9","output":"x"}]}`, nil,
			400, "invalid_request_error", "input", "", "No tool call found for function call output with call_id call_9."},
		{"output without call_id", "", `{"model":"m","input":[{"role":"user","content":"a"},{"type":"function_call_output","output":"x"}]}`, nil,
			400, "invalid_request_error", "input[1].call_id", "missing_required_parameter", ""},
		{"missing tool output", "fc", `{"model":"m","previous_response_id":"` + fcResp + `","input":"and?"}`, nil,
			400, "invalid_request_error", "input", "", "No tool output found for function call"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := call(t, s, c.account, c.body, c.hdr...)
			e := gjson.GetBytes(b, "error")
			for _, k := range []string{"message", "type", "param", "code"} {
				if !e.Get(k).Exists() {
					t.Errorf("error without %q: %s", k, b)
				}
			}
			if resp.StatusCode != c.status || e.Get("type").String() != c.typ || e.Get("param").String() != c.param ||
				e.Get("code").String() != c.code || !strings.Contains(e.Get("message").String(), c.msg) {
				t.Errorf("got %d %s", resp.StatusCode, b)
			}
		})
	}
	if resp, _ := call(t, s, "pinned", `{"model":"m"}`, "Authorization", "Bearer sk-right-key-1234567890"); resp.StatusCode != 200 {
		t.Errorf("right key: %d", resp.StatusCode)
	}
}

func TestRouting(t *testing.T) {
	s := newServer(t)
	do := func(method, path string) *http.Response {
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(`{"model":"m"}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/v1/responses", 200},
		{"POST", "/team-1/v1/responses", 200},
		{"GET", "/team-1/v1/responses", 426},
		{"PUT", "/v1/responses", 405},
		{"POST", "/v1/chat/completions", 404},
		{"POST", "/a/b/v1/responses", 404},
	} {
		if resp := do(c.method, c.path); resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
	}
	if got := s.BaseURL(""); got != s.URL+"/v1" {
		t.Errorf("BaseURL(\"\") = %q", got)
	}
	if got := s.BaseURL("team-1"); got != s.URL+"/team-1/v1" {
		t.Errorf("BaseURL(team-1) = %q", got)
	}
	reqs := s.Requests()
	if len(reqs) != 6 || reqs[1].Account != "team-1" || reqs[1].Path != "/team-1/v1/responses" || reqs[3].Method != "PUT" {
		t.Errorf("requests %+v", reqs)
	}
}

func TestScriptedStatus(t *testing.T) {
	s := newServer(t)
	s.Script("a",
		relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"7"}}},
		relaytest.Step{Status: 403, Body: "<html>blocked</html>", Header: http.Header{"Content-Type": {"text/html"}, "X-Request-Id": nil}},
		relaytest.Step{Status: 500},
	)
	s.SetDefault("a", relaytest.Step{Status: 529})

	resp, b := call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || gjson.GetBytes(b, "error.code").String() != "rate_limit_exceeded" ||
		gjson.GetBytes(b, "error.type").String() != "rate_limit_error" || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Errorf("429: %v %s", resp.Header, b)
	}
	// Scripted faults come before authentication.
	resp, b = call(t, s, "a", `not even json`, "Authorization", "")
	if resp.StatusCode != 403 || string(b) != "<html>blocked</html>" || resp.Header.Get("Content-Type") != "text/html" ||
		resp.Header.Get("X-Request-Id") != "" {
		t.Errorf("403: %v %q", resp.Header, b)
	}
	resp, b = call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 500 || gjson.GetBytes(b, "error.type").String() != "server_error" {
		t.Errorf("500: %s", b)
	}
	for range 2 {
		if resp, b = call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 529 || gjson.GetBytes(b, "error.code").String() != "server_is_overloaded" {
			t.Errorf("default: %d %s", resp.StatusCode, b)
		}
	}
	// Other accounts are unaffected; the zero Step restores the default.
	if resp, _ = call(t, s, "b", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("account b: %d", resp.StatusCode)
	}
	s.SetDefault("a", relaytest.Step{})
	if resp, _ = call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("after SetDefault zero: %d", resp.StatusCode)
	}
	var statuses []int
	for _, sv := range s.Served() {
		statuses = append(statuses, sv.HTTPStatus)
	}
	if want := []int{429, 403, 500, 529, 529, 200, 200}; !equalInts(statuses, want) {
		t.Errorf("served statuses %v, want %v", statuses, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestResetBeforeHeaders(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{ResetBeforeHeaders: true})
	resp, err := send(t, context.Background(), s, "a", `{"model":"m","stream":true}`)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want a transport error", resp.StatusCode)
	}
	served := s.Served()
	if len(served) != 1 || served[0].Status != "aborted" || served[0].HTTPStatus != 0 || served[0].ResponseID != "" {
		t.Errorf("served %+v", served)
	}
	// The next request is normal.
	if resp, _ := call(t, s, "a", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("next: %d", resp.StatusCode)
	}
}

func TestResetAfterEvents(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{ResetAfterEvents: 4})
	resp, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"x"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err == nil || len(events) != 4 {
		t.Fatalf("got %d events, err %v; want 4 events and an error", len(events), err)
	}
	checkEvents(t, events)
	served := s.Served()
	if len(served) != 1 || served[0].Status != "aborted" || served[0].Events != 4 || served[0].Usage != (relaytest.Usage{}) ||
		served[0].ResponseID == "" {
		t.Errorf("served %+v", served)
	}

	// Stream:false: headers and half the body, then the cut.
	s.Script("a", relaytest.Step{ResetAfterEvents: 1})
	resp, err = send(t, context.Background(), s, "a", `{"model":"m"}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("json body read error %v, want unexpected EOF", err)
	}

	// A count covering the whole stream: all events, then a cut body.
	s.Script("a", relaytest.Step{ResetAfterEvents: 1000})
	_, events, err = stream(t, s, "a", `{"model":"m","stream":true}`)
	if err == nil || len(events) != 13 || events[12].Type != "response.completed" {
		t.Errorf("got %v, err %v", types(events), err)
	}
	if sv := s.Served(); sv[2].Status != "completed" || sv[2].Usage.Output != 5 {
		t.Errorf("served %+v", sv[2])
	}
}

// readEvents reads n events from an SSE body without waiting for its end.
func readEvents(t *testing.T, br *bufio.Reader, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "event: "); ok {
			out = append(out, name)
		}
	}
	return out
}

func TestIdleAfterEvents(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{IdleAfterEvents: 3})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := send(t, ctx, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if got := readEvents(t, br, 3); got[2] != "response.output_item.added" {
		t.Errorf("events %v", got)
	}
	if n := s.InFlight("a"); n != 1 {
		t.Errorf("in flight while idle: %d", n)
	}
	cancel()
	served, err := s.WaitServed(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if served[0].Status != "aborted" || served[0].Events != 3 {
		t.Errorf("served %+v", served[0])
	}
	if n := s.InFlight("a"); n != 0 {
		t.Errorf("in flight after: %d", n)
	}
}

func TestHangAndHold(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := send(t, ctx, s, "a", `{"model":"m"}`)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if err := s.WaitInFlight(context.Background(), "a", 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("hung request: %v", err)
	}
	if served, _ := s.WaitServed(context.Background(), 1); served[0].Status != "aborted" || served[0].HTTPStatus != 0 {
		t.Errorf("served %+v", served[0])
	}

	// Hold three requests, observe them in flight together, release them.
	release := make(chan struct{})
	s.SetDefault("b", relaytest.Step{Hold: release})
	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 3 {
		wg.Go(func() {
			resp, err := send(t, context.Background(), s, "b", `{"model":"m","stream":true}`)
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	if err := s.WaitInFlight(context.Background(), "b", 3); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("held request: %d", c)
		}
	}
	if s.MaxInFlight("b") != 3 || s.InFlight("b") != 0 {
		t.Errorf("in flight %d, max %d", s.InFlight("b"), s.MaxInFlight("b"))
	}
}

func TestFirstTokenDelay(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{FirstTokenDelay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := send(t, ctx, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// created and in_progress come before the delay.
	if got := readEvents(t, bufio.NewReader(resp.Body), 2); got[1] != "response.in_progress" {
		t.Errorf("events %v", got)
	}
	cancel() // the timer must not keep the handler alive
	if served, _ := s.WaitServed(context.Background(), 1); served[0].Status != "aborted" || served[0].Events != 2 {
		t.Errorf("served %+v", served[0])
	}

	s.Script("a", relaytest.Step{FirstTokenDelay: time.Millisecond})
	if _, events, err := stream(t, s, "a", `{"model":"m","stream":true}`); err != nil || len(events) != 13 {
		t.Errorf("short delay: %d events, %v", len(events), err)
	}
}

func TestInBandFailures(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{InBandFailed: "server_is_overloaded"}, relaytest.Step{ErrorEvent: true, InBandFailed: "rate_limit_exceeded"})

	resp, events, err := stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode, err)
	}
	checkEvents(t, events)
	if want := []string{"response.created", "response.in_progress", "response.failed"}; !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	f := last(events).Get("response")
	if f.Get("status").String() != "failed" || f.Get("error.code").String() != "server_is_overloaded" ||
		f.Get("error.message").String() == "" || f.Get("output.#").Int() != 0 {
		t.Errorf("response.failed %s", f.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := []string{"response.created", "response.in_progress", "error"}; !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	e := last(events)
	if e.Get("error.code").String() != "rate_limit_exceeded" || e.Get("error.type").String() == "" || e.Get("error.message").String() == "" {
		t.Errorf("error event %s", e.Raw)
	}

	// stream:false: a failed response object.
	s.Script("a", relaytest.Step{InBandFailed: "server_error"})
	resp, b := call(t, s, "a", `{"model":"m"}`)
	if resp.StatusCode != 200 || gjson.GetBytes(b, "status").String() != "failed" || gjson.GetBytes(b, "error.code").String() != "server_error" {
		t.Errorf("json: %s", b)
	}

	sv := s.Served()
	if sv[0].Status != "failed" || sv[0].Code != "server_is_overloaded" || sv[0].Usage != (relaytest.Usage{}) || sv[0].Events != 3 {
		t.Errorf("served[0] %+v", sv[0])
	}
	if sv[1].Status != "error" || sv[1].Code != "rate_limit_exceeded" {
		t.Errorf("served[1] %+v", sv[1])
	}
	if sv[2].Status != "failed" || sv[2].Code != "server_error" {
		t.Errorf("served[2] %+v", sv[2])
	}
}

func TestTerminalVariants(t *testing.T) {
	s := newServer(t)
	s.Script("a",
		relaytest.Step{Incomplete: "max_output_tokens"},
		relaytest.Step{FailAfterOutput: "server_error"},
		relaytest.Step{NoTerminal: true},
	)
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := textTurn(5, "response.incomplete"); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	r := last(events).Get("response")
	if r.Get("status").String() != "incomplete" || r.Get("incomplete_details.reason").String() != "max_output_tokens" ||
		r.Get("usage.input_tokens").Int() != 13 || r.Get("output.0.status").String() != "incomplete" {
		t.Errorf("incomplete %s", r.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := textTurn(5, "response.failed"); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}
	r = last(events).Get("response")
	if r.Get("status").String() != "failed" || r.Get("error.code").String() != "server_error" ||
		r.Get("usage.output_tokens").Int() != 5 || r.Get("output.0.content.0.text").String() != "Echo: a b c" {
		t.Errorf("failed after output %s", r.Raw)
	}

	_, events, err = stream(t, s, "a", `{"model":"m","stream":true,"input":"a b c"}`)
	if err != nil {
		t.Fatalf("no terminal must be a clean EOF: %v", err)
	}
	if want := textTurn(5, ""); !equal(types(events), want) {
		t.Fatalf("events %v", types(events))
	}

	sv := s.Served()
	want := []relaytest.Usage{{Input: 13, Output: 5}, {Input: 13, Output: 5}, {}}
	statuses := []string{"incomplete", "failed", "aborted"}
	for i := range sv {
		if sv[i].Status != statuses[i] || sv[i].Usage != want[i] {
			t.Errorf("served[%d] %+v", i, sv[i])
		}
	}
}

func TestLargeEvents(t *testing.T) {
	s := newServer(t)
	const pad = 100 << 10
	s.Script("a", relaytest.Step{EventPadding: pad, Deltas: 3})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"big"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	deltas := 0
	for _, e := range events {
		if e.Type == "response.output_text.delta" {
			deltas++
			if len(e.Data) <= pad || len(gjson.GetBytes(e.Data, "obfuscation").String()) != pad {
				t.Errorf("delta of %d bytes", len(e.Data))
			}
		}
	}
	if deltas != 3 {
		t.Errorf("%d deltas", deltas)
	}
	s.Script("a", relaytest.Step{EventPadding: -1})
	_, events, _ = stream(t, s, "a", `{"model":"m","stream":true}`)
	if o := gjson.GetBytes(events[4].Data, "obfuscation"); !o.Exists() || o.String() != "" {
		t.Errorf("negative padding: %s", events[4].Data)
	}
}

func TestManyDeltas(t *testing.T) {
	s := newServer(t)
	s.SetDefault("a", relaytest.Step{Deltas: 200})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true,"input":"hi ☃"}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, events)
	if want := textTurn(200, "response.completed"); !equal(types(events), want) {
		t.Fatalf("%d events", len(events))
	}
	var text strings.Builder
	for _, e := range events {
		if e.Type == "response.output_text.delta" {
			d := gjson.GetBytes(e.Data, "delta").String()
			if d == "" {
				t.Fatal("empty delta")
			}
			text.WriteString(d)
		}
	}
	want := "Echo: hi ☃" + strings.Repeat(".", 200-10)
	if text.String() != want || last(events).Get("response.output.0.content.0.text").String() != want {
		t.Errorf("text %q", text.String())
	}
	if out := last(events).Get("response.usage.output_tokens").Int(); out != 200 {
		t.Errorf("output tokens %d", out)
	}
}

func TestFraming(t *testing.T) {
	s := newServer(t)
	body := `{"model":"m","stream":true,"input":"frame me",
		"tools": [
			{"type": "function", "name": "lookup"}
		],
		"tool_choice": "none"}`
	_, plain, err := stream(t, s, "a", body+"\n")
	if err != nil {
		t.Fatal(err)
	}
	s.Script("a", relaytest.Step{CRLF: true, MultiLineData: true, Comments: true})
	resp, err := send(t, context.Background(), s, "a", body)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(": ping\r\n\r\n")) || !bytes.Contains(raw, []byte("\r\ndata: }\r\n\r\n")) || bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("framing not applied: %.300q", raw)
	}
	framed, err := relaytest.ReadSSE(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !equal(types(framed), types(plain)) {
		t.Fatalf("framed %v\nplain %v", types(framed), types(plain))
	}
	checkEvents(t, framed)
	for i := range framed {
		if gjson.GetBytes(framed[i].Data, "type").String() != gjson.GetBytes(plain[i].Data, "type").String() {
			t.Errorf("event %d differs", i)
		}
	}
	// The pretty-printed tools are echoed on one data line. The tool is a
	// function and the last input a user message: a call of "lookup".
	r := last(plain).Get("response")
	if r.Get("tools.0.name").String() != "lookup" || r.Get("tool_choice").String() != "none" || r.Get("output.0.name").String() != "lookup" {
		t.Errorf("echo %s", r.Raw)
	}
}

func TestReasoningAndUsageOverride(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m","input":"think","reasoning":{"effort":"high","summary":"auto"}}`)
	u := gjson.GetBytes(b, "usage")
	if u.Get("output_tokens_details.reasoning_tokens").Int() != 16 || u.Get("output_tokens").Int() != 21 ||
		u.Get("total_tokens").Int() != 11+21 || gjson.GetBytes(b, "reasoning.effort").String() != "high" {
		t.Errorf("reasoning usage %s", b)
	}
	s.Script("a", relaytest.Step{Usage: &relaytest.Usage{Input: 1000, Cached: 900, Output: 50, Reasoning: 20}})
	_, events, err := stream(t, s, "a", `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	u = last(events).Get("response.usage")
	if u.Raw != `{"input_tokens":1000,"input_tokens_details":{"cached_tokens":900},"output_tokens":50,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":1050}` {
		t.Errorf("usage %s", u.Raw)
	}
	if sv := s.Served(); sv[1].Usage != (relaytest.Usage{Input: 1000, Cached: 900, Output: 50, Reasoning: 20}) {
		t.Errorf("served usage %+v", sv[1].Usage)
	}
}

func TestRequestsLogAndGzip(t *testing.T) {
	s := newServer(t)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(`{"model":"m","input":"zipped"}`))
	zw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.BaseURL("z")+"/responses", bytes.NewReader(zb.Bytes()))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("Session_id", "sess-1")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: zipped" {
		t.Errorf("gzip body: %s", b)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Account != "z" || reqs[0].Method != "POST" || !bytes.Equal(reqs[0].Body, zb.Bytes()) ||
		reqs[0].Header.Get("Session_id") != "sess-1" || reqs[0].Header.Get("Authorization") != "Bearer "+testKey || reqs[0].Time.IsZero() {
		t.Errorf("requests %+v", reqs)
	}

	s.Reset()
	if len(s.Requests()) != 0 || len(s.Served()) != 0 || s.MaxInFlight("z") != 0 {
		t.Error("Reset kept logs")
	}
	s.SetLogging(false)
	call(t, s, "z", `{"model":"m"}`)
	if len(s.Requests()) != 0 || len(s.Served()) != 0 || s.MaxInFlight("z") != 1 {
		t.Error("logging off still logs, or stopped counting")
	}
}

func TestResetClearsScriptsAndStores(t *testing.T) {
	s := newServer(t)
	_, b := call(t, s, "a", `{"model":"m"}`)
	id := gjson.GetBytes(b, "id").String()
	s.Script("a", relaytest.Step{Status: 500})
	s.SetDefault("a", relaytest.Step{Status: 502})
	s.Reset()
	resp, b := call(t, s, "a", `{"model":"m","previous_response_id":"`+id+`"}`)
	if resp.StatusCode != 400 || gjson.GetBytes(b, "error.code").String() != "previous_response_not_found" {
		t.Errorf("after Reset: %d %s", resp.StatusCode, b)
	}
}

func TestConcurrentAccounts(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{Status: 429}, relaytest.Step{ResetAfterEvents: 3})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			account := []string{"a", "b", "c", ""}[i%4]
			resp, err := send(t, context.Background(), s, account, `{"model":"m","stream":true,"input":"go"}`)
			if err != nil {
				return
			}
			relaytest.ReadSSE(resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if got := len(s.Served()); got != 40 {
		t.Errorf("served %d", got)
	}
	if len(s.Requests()) != 40 {
		t.Errorf("requests %d", len(s.Requests()))
	}
	for _, a := range []string{"a", "b", "c", ""} {
		if s.InFlight(a) != 0 || s.MaxInFlight(a) < 1 {
			t.Errorf("account %q: in flight %d, max %d", a, s.InFlight(a), s.MaxInFlight(a))
		}
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := relaytest.NewServer()
	s.Script("hang", relaytest.Step{Hang: true})
	s.Script("idle", relaytest.Step{IdleAfterEvents: 2})
	s.Script("hold", relaytest.Step{Hold: make(chan struct{})})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, a := range []string{"hang", "idle", "hold"} {
		wg.Go(func() {
			resp, err := send(t, context.Background(), s, a, `{"model":"m","stream":true}`)
			if err == nil {
				_, err = relaytest.ReadSSE(resp.Body)
				resp.Body.Close()
			}
			errs <- err
		})
	}
	for _, a := range []string{"hang", "idle", "hold"} {
		if err := s.WaitInFlight(context.Background(), a, 1); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a request ended cleanly although the server closed")
		}
	}
	for _, g := range leakedGoroutines() {
		if strings.Contains(g, "relaytest.(*Upstream).ServeHTTP") {
			t.Errorf("handler still running after Close:\n%s", g)
		}
	}
	if sv := s.Served(); len(sv) != 3 {
		t.Errorf("served %+v", sv)
	}
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Errorf("leaked:\n%s", strings.Join(leaks, "\n\n"))
	}
}

func TestZeroUpstream(t *testing.T) {
	var u relaytest.Upstream
	ts := httptest.NewServer(&u)
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/responses", strings.NewReader(`{"model":"m","input":"zero"}`))
	req.Header.Set("Authorization", "Bearer x")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: zero" {
		t.Errorf("zero Upstream: %s", b)
	}
	if len(u.Served()) != 1 {
		t.Error("not recorded")
	}
}

func TestReadSSE(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	in := ": hello\n\n" +
		"event: a\ndata: 1\n\n" +
		"event: b\r\ndata: 2\r\ndata:3\r\nid: 9\r\nretry: 10\r\n\r\n" +
		"event: c\rdata: " + long + "\r\r" +
		"event: no-data\n\n" +
		"data\n\n" +
		"event: cut\ndata: partial\n"
	events, err := relaytest.ReadSSE(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []relaytest.Event{{"a", []byte("1")}, {"b", []byte("2\n3")}, {"c", []byte(long)}, {"", []byte("")}}
	if len(events) != len(want) {
		t.Fatalf("got %d events: %v", len(events), types(events))
	}
	for i := range want {
		if events[i].Type != want[i].Type || !bytes.Equal(events[i].Data, want[i].Data) {
			t.Errorf("event %d: %q %.40q", i, events[i].Type, events[i].Data)
		}
	}
	_, err = relaytest.ReadSSE(io.MultiReader(strings.NewReader("data: x\n\n"), errReader{}))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
