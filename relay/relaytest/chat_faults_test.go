package relaytest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// chatError is the real API's 400 shape; empty param and code are null.
func chatError(msg, param, code string) string {
	str := func(v string) string {
		if v == "" {
			return "null"
		}
		return strconv.Quote(v)
	}
	return `{"error":{"message":` + strconv.Quote(msg) + `,"type":"invalid_request_error","param":` + str(param) +
		`,"code":` + str(code) + `}}`
}

func TestChatToolPairing(t *testing.T) {
	s := newServer(t)
	const call = `{"role":"assistant","tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"call_b","type":"function","function":{"name":"f","arguments":"{}"}}]}`
	const user = `{"role":"user","content":"hi"}`
	tool := func(id string) string { return `{"role":"tool","tool_call_id":"` + id + `","content":"ok"}` }
	unanswered := func(at, ids string) string {
		return chatError("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "+
			"The following tool_call_ids did not have response messages: "+ids, "messages.["+at+"].role", "")
	}
	orphan := func(at string) string {
		return chatError("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
			"messages.["+at+"].role", "")
	}
	for _, c := range []struct {
		name, msgs, want string
	}{
		{"trailing call", user + "," + call, unanswered("1", "call_a, call_b")},
		{"half answered", user + "," + call + "," + tool("call_b") + "," + user, unanswered("1", "call_a")},
		{"user between", user + "," + call + "," + user + "," + tool("call_a") + "," + tool("call_b"), unanswered("1", "call_a, call_b")},
		{"tool first", tool("call_a") + "," + user, orphan("0")},
		{"unknown id", user + "," + call + "," + tool("call_a") + "," + tool("call_x"), orphan("3")},
		{"tool after user", user + "," + call + "," + tool("call_a") + "," + tool("call_b") + "," + user + "," + tool("call_a"), orphan("5")},
	} {
		code, r := chatJSON(t, s, "a", `{"model":"m","messages":[`+c.msgs+`]}`)
		if code != 400 || r.Raw != c.want {
			t.Errorf("%s: %d %s\nwant %s", c.name, code, r.Raw, c.want)
		}
	}
	// Answered in any order, then the conversation goes on.
	code, r := chatJSON(t, s, "a", `{"model":"m","messages":[`+user+","+call+","+tool("call_b")+","+tool("call_a")+`,{"role":"assistant","content":"done"},`+user+`]}`)
	if code != 200 || r.Get("choices.0.message.content").String() != "Echo: hi" {
		t.Errorf("paired: %d %s", code, r.Raw)
	}
	if sv := s.Served()[0]; sv.Status != "error" || sv.HTTPStatus != 400 || sv.ResponseID != "" {
		t.Errorf("served %+v", sv)
	}
}

func TestChatValidation(t *testing.T) {
	s := newServer(t)
	const msg = `"messages":[{"role":"user","content":"x"}]`
	for _, c := range []struct{ body, want string }{
		{`{` + msg + `}`, chatError("you must provide a model parameter", "", "")},
		{`{"model":"m"}`, chatError("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")},
		{`{"model":"m","messages":[]}`, chatError("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array")},
		{`{"model":"m","messages":"hi"}`, chatError("Invalid type for 'messages': expected an array, but got a string instead.", "messages", "invalid_type")},
		{`{"model":"m","messages":[{"role":"bot","content":"x"}]}`,
			chatError("Invalid value: 'bot'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'.", "messages[0].role", "invalid_value")},
		{`{"model":"m","messages":[{"content":"x"}]}`, chatError("Missing required parameter: 'messages[0].role'.", "messages[0].role", "missing_required_parameter")},
		{`{"model":"m","messages":[{"role":"user"}]}`, chatError("Missing required parameter: 'messages[0].content'.", "messages[0].content", "missing_required_parameter")},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"input_text","text":"x"}]}]}`,
			chatError("Invalid value: 'input_text'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'.", "messages[0].content[0].type", "invalid_value")},
		{`{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`,
			chatError("Invalid value: 'image_url'. Supported values are: 'text'.", "messages[0].content[0].type", "invalid_value")},
		{`{"model":"m","messages":[{"role":"tool","content":"x"}]}`,
			chatError("Missing required parameter: 'messages[0].tool_call_id'.", "messages[0].tool_call_id", "missing_required_parameter")},
		{`{"model":"m",` + msg + `,"stream_options":{"include_usage":true}}`,
			chatError("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", "")},
		{`{"model":"m",` + msg + `,"stream":"yes"}`, chatError("Invalid type for 'stream': expected a boolean, but got a string instead.", "stream", "invalid_type")},
		// The flat Responses shapes of tools and formats.
		{`{"model":"m",` + msg + `,"tools":[{"type":"function","name":"f","parameters":{}}]}`,
			chatError("Missing required parameter: 'tools[0].function'.", "tools[0].function", "missing_required_parameter")},
		{`{"model":"m",` + msg + `,"tools":[{"type":"web_search"}]}`,
			chatError("Invalid value: 'web_search'. Supported values are: 'function' and 'custom'.", "tools[0].type", "invalid_value")},
		{`{"model":"m",` + msg + `,"response_format":{"type":"json_schema","name":"n","schema":{}}}`,
			chatError("Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema", "missing_required_parameter")},
		{`{"model":"m",` + msg + `,"max_completion_tokens":0}`,
			chatError("Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.", "max_completion_tokens", "integer_below_min_value")},
		{`{"model":"m",` + msg + `,"max_tokens":1.5}`, chatError("Invalid type for 'max_tokens': expected an integer, but got a number instead.", "max_tokens", "invalid_type")},
		{`{"model":"m",` + msg + `,"reasoning_effort":"max"}`,
			chatError("Invalid value: 'max'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', and 'xhigh'.", "reasoning_effort", "invalid_value")},
		{`{"model":"m",` + msg + `,]`, chatError("We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.", "", "")},
	} {
		code, r := chatJSON(t, s, "a", c.body)
		if code != 400 || r.Raw != c.want {
			t.Errorf("%s: %d %s\nwant %s", c.body, code, r.Raw, c.want)
		}
	}
	// Valid shapes of the same fields.
	code, r := chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"developer","content":"d"},{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:,"}}]}],"stream":false,"stream_options":null,"max_tokens":100,"temperature":0.2,"n":1}`)
	if code != 200 || r.Get("choices.0.message.content").String() != "Echo: look" {
		t.Errorf("valid: %d %s", code, r.Raw)
	}
}

func TestChatAuthAndMethod(t *testing.T) {
	s := newServer(t)
	resp, err := s.Client().Post(s.BaseURL("a")+"/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || gjson.GetBytes(b, "error.type").String() != "authentication_error" {
		t.Errorf("no key: %d %s", resp.StatusCode, b)
	}
	s.SetKey("a", "sk-right-0123456789")
	code, r := chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"x"}]}`)
	if code != 401 || r.Get("error.code").String() != "invalid_api_key" {
		t.Errorf("wrong key: %d %s", code, r.Raw)
	}
	// Another account keeps its own key: stateless, but per account.
	if code, r = chatJSON(t, s, "b", `{"model":"m","messages":[{"role":"user","content":"x"}]}`); code != 200 {
		t.Errorf("account b: %d %s", code, r.Raw)
	}
	code, r = do(t, s, http.MethodGet, "b", "/chat/completions", "")
	if code != 405 {
		t.Errorf("GET: %d %s", code, r.Raw)
	}
	// Scripted statuses act before authentication, as on every route.
	s.Script("a", relaytest.Step{Status: 429})
	if code, r = chatJSON(t, s, "a", `{}`); code != 429 || r.Get("error.code").String() != "rate_limit_exceeded" {
		t.Errorf("scripted: %d %s", code, r.Raw)
	}
}

func TestChatLength(t *testing.T) {
	s := newServer(t)
	const body = `{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_completion_tokens":2`
	_, r := chatJSON(t, s, "a", body+`}`)
	// "Echo: hello there" in 5 pieces: "Ech", "o: ", ...
	if c := r.Get("choices.0"); c.Get("finish_reason").String() != "length" || c.Get("message.content").String() != "Echo: " ||
		r.Get("usage.completion_tokens").Int() != 2 {
		t.Errorf("cut: %s", r.Raw)
	}
	if sv := s.Served()[0]; sv.Status != "incomplete" || sv.Usage.Output != 2 {
		t.Errorf("served %+v", sv)
	}
	lines, err := chatLines(t, s, "a", body+`,"stream":true}`)
	if err != nil || len(lines) != 5 || joined(lines, "choices.0.delta.content") != "Echo: " ||
		gjson.Get(lines[3], "choices.0.finish_reason").String() != "length" {
		t.Errorf("stream cut: %q %v", lines, err)
	}
	// Reasoning spends the budget first: 16 of 18, then two pieces.
	_, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":18,"reasoning_effort":"high"}`)
	if r.Get("choices.0.message.content").String() != "Echo: " || r.Get("usage.completion_tokens").Int() != 18 ||
		r.Get("usage.completion_tokens_details.reasoning_tokens").Int() != 16 || r.Get("choices.0.finish_reason").String() != "length" {
		t.Errorf("reasoning cut: %s", r.Raw)
	}
	// A budget that covers the answer changes nothing.
	if _, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":5}`); r.Get("choices.0.finish_reason").String() != "stop" {
		t.Errorf("enough: %s", r.Raw)
	}
	// End "incomplete content_filter" ends with that finish_reason.
	s.Script("a", relaytest.Step{End: "incomplete content_filter"})
	if _, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`); r.Get("choices.0.finish_reason").String() != "content_filter" {
		t.Errorf("content_filter: %s", r.Raw)
	}
}

func TestChatReasoningAndFormat(t *testing.T) {
	s := newServer(t)
	const body = `{"model":"m","messages":[{"role":"user","content":"hello there"}],"reasoning_effort":"low"`
	_, r := chatJSON(t, s, "a", body+`}`)
	m := r.Get("choices.0.message")
	if m.Get("reasoning_content").String() != "Thinking about hello there" || m.Get("content").String() != "Echo: hello there" ||
		r.Get("usage.completion_tokens").Int() != 21 || r.Get("usage.completion_tokens_details.reasoning_tokens").Int() != 16 {
		t.Errorf("reasoning: %s", r.Raw)
	}
	lines, err := chatLines(t, s, "a", body+`,"stream":true}`)
	if err != nil || len(lines) != 13 {
		t.Fatalf("lines %q %v", lines, err)
	}
	if got := joined(lines[1:6], "choices.0.delta.reasoning_content"); got != "Thinking about hello there" ||
		joined(lines[6:11], "choices.0.delta.content") != "Echo: hello there" || strings.Contains(lines[6], "reasoning_content") {
		t.Errorf("reasoning pieces before content: %q", lines)
	}
	// reasoning_effort "none" asks for no reasoning.
	if _, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"none"}`); r.Get("choices.0.message.reasoning_content").Exists() {
		t.Errorf("none: %s", r.Raw)
	}
	// json_schema: the content is a JSON object.
	_, r = chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"say \"hi\""}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}}`)
	content := r.Get("choices.0.message.content").String()
	if !gjson.Valid(content) || gjson.Get(content, "echo").String() != `Echo: say "hi"` {
		t.Errorf("json_schema: %s", r.Raw)
	}
}

func TestChatErrors(t *testing.T) {
	s := newServer(t)
	const body = `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	// Mid-stream: the output, then an error line; no finish, usage or [DONE].
	s.Script("a", relaytest.Step{End: "failed rate_limit_exceeded"})
	lines, err := chatLines(t, s, "a", body)
	if err != nil || len(lines) != 7 {
		t.Fatalf("lines %q %v", lines, err)
	}
	want := `{"error":{"message":"Rate limit reached. Please try again in 1s.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
	if lines[6] != want || strings.Contains(strings.Join(lines, ""), "finish_reason\":\"") {
		t.Errorf("lines %q", lines)
	}
	if sv := s.Served()[0]; sv.Status != "error" || sv.Code != "rate_limit_exceeded" || sv.Events != 7 || sv.Usage != (relaytest.Usage{}) {
		t.Errorf("served %+v", sv)
	}
	// Before any output: the error line alone.
	s.Script("a", relaytest.Step{End: "error"})
	if lines, err = chatLines(t, s, "a", body); err != nil || len(lines) != 1 || gjson.Get(lines[0], "error.code").String() != "server_error" {
		t.Errorf("early: %q %v", lines, err)
	}
	// Without streaming, the HTTP error a real upstream sends.
	s.Script("a", relaytest.Step{End: "refused server_is_overloaded"})
	code, r := chatJSON(t, s, "a", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if code != 503 || r.Get("error.code").String() != "server_is_overloaded" || r.Get("error.type").String() != "server_error" {
		t.Errorf("json: %d %s", code, r.Raw)
	}
	// End "none": a clean EOF after the output.
	s.Script("a", relaytest.Step{End: "none"})
	if lines, err = chatLines(t, s, "a", body); err != nil || len(lines) != 6 || s.Served()[3].Status != "aborted" {
		t.Errorf("none: %q %v %+v", lines, err, s.Served()[3])
	}
}

func TestChatCutAndHold(t *testing.T) {
	s := newServer(t)
	const body = `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`
	s.Script("a", relaytest.Step{After: 3, Cut: true})
	lines, err := chatLines(t, s, "a", body)
	if err == nil || len(lines) != 3 {
		t.Errorf("cut: %q %v", lines, err)
	}
	if sv := s.Served()[0]; sv.Status != "aborted" || sv.Events != 3 {
		t.Errorf("served %+v", sv)
	}

	hold := make(chan struct{})
	s.Script("a", relaytest.Step{After: 2, Hold: hold})
	resp, err := chatPost(t, context.Background(), s, "a", body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for range 2 {
		if _, err := br.ReadString('\n'); err != nil { // data: line
			t.Fatal(err)
		}
		if _, err := br.ReadString('\n'); err != nil { // blank line
			t.Fatal(err)
		}
	}
	if n := s.InFlight("a"); n != 1 {
		t.Errorf("in flight while held: %d", n)
	}
	close(hold)
	events, err := relaytest.ReadSSE(br)
	resp.Body.Close()
	if err != nil || len(events) != 6 || string(events[5].Data) != "[DONE]" {
		t.Errorf("after hold: %d events, %v", len(events), err)
	}

	// stream:false: half the body, then the cut.
	s.Script("a", relaytest.Step{After: 1, Cut: true})
	resp, err = chatPost(t, context.Background(), s, "a", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("json cut: %v", err)
	}
	if err := s.Wait(context.Background(), func() bool { return len(s.Served()) == 3 && s.InFlight("a") == 0 }); err != nil {
		t.Fatal(err)
	}
	if sv := s.Served()[2]; sv.Status != "aborted" || sv.Usage != (relaytest.Usage{}) {
		t.Errorf("served %+v", sv)
	}
}
