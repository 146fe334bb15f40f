package relaytest_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/internal/stamp"
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
	want := relaytest.Served{Account: "acct", RequestID: resp.Header.Get("X-Request-Id"), ResponseID: id,
		HTTPStatus: 200, Status: "completed", Usage: relaytest.Usage{Input: 12, Output: 5}, Events: len(events), Seq: 1}
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
	if served := s.Served(); len(served) != 1 || served[0].Status != "completed" || served[0].Events != 0 {
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
	s.Script("a", relaytest.Step{FunctionCall: `{"name":"f","arguments":"{}","call_id":"call_x"}`})
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
	s.Script("fc", relaytest.Step{FunctionCall: "{}"})
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
		{"POST", "/v1/completions", 404},
		{"POST", "/a/b/v1/responses", 404},
		{"POST", "/team-1/v1/chat/completions", 400}, // no messages
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
	if len(reqs) != 7 || reqs[1].Account != "team-1" || reqs[1].Path != "/team-1/v1/responses" || reqs[3].Method != "PUT" {
		t.Errorf("requests %+v", reqs)
	}
}

// TestPacedStampedStream: EventInterval spaces the events after the first
// output event, and Events "stamp" puts each delta's writing time in its
// obfuscation string.
func TestPacedStampedStream(t *testing.T) {
	s := newServer(t)
	const interval = 2 * time.Millisecond
	s.SetDefault("acct", relaytest.Step{Deltas: 4, EventInterval: interval, Events: "stamp"})
	before := time.Now()
	_, events, err := stream(t, s, "acct", `{"model":"gpt-5","stream":true,"input":"hi"}`)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	checkEvents(t, events)
	var stamps []time.Time
	for _, e := range events {
		sent, ok := stamp.Parse(e.Data)
		if e.Type != "response.output_text.delta" {
			if ok {
				t.Fatalf("%s carries a stamp: %s", e.Type, e.Data)
			}
			continue
		}
		if !ok || sent.Before(before) || sent.After(after) {
			t.Fatalf("delta stamp %v (ok %v) outside the request [%v, %v]: %s", sent, ok, before, after, e.Data)
		}
		stamps = append(stamps, sent)
	}
	if len(stamps) != 4 {
		t.Fatalf("%d stamped deltas", len(stamps))
	}
	for i := 1; i < len(stamps); i++ {
		if gap := stamps[i].Sub(stamps[i-1]); gap < interval {
			t.Fatalf("deltas %d and %d written %v apart, want >= %v", i-1, i, gap, interval)
		}
	}
	if _, ok := stamp.Parse([]byte(`{"type":"response.output_text.delta","obfuscation":"abc"}`)); ok {
		t.Fatal("padding parsed as a stamp")
	}
}
