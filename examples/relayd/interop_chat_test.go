package main

// A Chat Completions account ("wire_api": "chat") behind relayd, with the
// openai-go SDK on the Responses API side: what a client sees must not
// tell it that the upstream speaks another API. relay/chat_test.go checks
// the translation at the library level; these go through the SDK, relayd's
// config and its usage rows.

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// newChatEnv is relayd whose account c1 speaks Chat Completions, followed
// by the given Responses accounts in the same group.
func newChatEnv(t *testing.T, more ...string) *env {
	t.Helper()
	return newEnv(t, append([]string{"c1"}, more...), func(c *Config) { c.Accounts[0].WireAPI = "chat" })
}

// chatRequests are the chat completions the fake received, in order.
func (e *env) chatRequests() []relaytest.Received {
	var out []relaytest.Received
	for _, r := range e.up.Requests() {
		if strings.HasSuffix(r.Path, "/chat/completions") {
			out = append(out, r)
		}
	}
	return out
}

// collect reads a stream to its end.
func collect(t *testing.T, s *ssestream.Stream[responses.ResponseStreamEventUnion]) []responses.ResponseStreamEventUnion {
	t.Helper()
	defer s.Close()
	var events []responses.ResponseStreamEventUnion
	for s.Next() {
		events = append(events, s.Current())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("after %d events: %v", len(events), err)
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	return events
}

// accumulate feeds each event, as the server event it is, to the SDK's
// Responses accumulator and returns the response the SDK reconstructs
// from the stream and the accumulator's projection before the terminal
// event (what the deltas and done events built).
func accumulate(t *testing.T, raws []string) (*responses.Response, responses.ResponseAccumulatorSnapshot) {
	t.Helper()
	var acc responses.ResponseAccumulator
	var before responses.ResponseAccumulatorSnapshot
	for i, raw := range raws {
		var ev responses.ResponsesServerEventUnion
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			t.Fatalf("event %d does not decode: %v: %s", i, err, raw)
		}
		if i == len(raws)-1 {
			before = acc.Snapshot()
		}
		if err := acc.AddEvent(ev); err != nil {
			t.Fatalf("the SDK's accumulator refused event %d: %v: %s", i, err, raw)
		}
	}
	resp, err := acc.ReconstructedResponse()
	if err != nil {
		t.Fatalf("the SDK's accumulator: %v", err)
	}
	return resp, before
}

func rawEvents(events []responses.ResponseStreamEventUnion) []string {
	raws := make([]string, len(events))
	for i, ev := range events {
		raws[i] = ev.RawJSON()
	}
	return raws
}

// outputOf is a response's output as JSON with its item ids, the relay's
// own per response, replaced.
func outputOf(r *responses.Response) string {
	out := gjson.Get(r.RawJSON(), "output").Raw
	for _, it := range r.Output {
		out = strings.ReplaceAll(out, `"`+it.ID+`"`, `"ID"`)
	}
	return out
}

// projection is the accumulator's view of a response: per item its type,
// call, arguments and text.
func projection(items []responses.ResponseAccumulatedOutput) []string {
	var out []string
	for _, it := range items {
		var text strings.Builder
		for i := range int64(len(it.Text)) {
			text.WriteString(it.Text[i])
		}
		out = append(out, strings.Join([]string{it.Type, it.Name, it.CallID, it.Arguments, text.String()}, "|"))
	}
	return out
}

func projectionOf(r *responses.Response) []string {
	var out []string
	for _, it := range r.Output {
		var text string
		if it.Type == "message" {
			for _, c := range it.Content {
				text += c.Text
			}
		}
		out = append(out, strings.Join([]string{it.Type, it.Name, it.CallID, it.Arguments.OfString, text}, "|"))
	}
	return out
}

// deltasOf concatenates the stream's deltas of each kind, as a client
// printing them would.
func deltasOf(events []responses.ResponseStreamEventUnion) map[string]string {
	m := map[string]string{}
	for _, ev := range events {
		if strings.HasSuffix(ev.Type, ".delta") {
			m[ev.Type] += ev.Delta
		}
	}
	return m
}

// The same turn answered as JSON and streamed: the response the SDK
// accumulates from the stream is the JSON one, output items, status and
// usage alike; only the ids differ.
func TestInteropChatStreamEqualsJSON(t *testing.T) {
	weather := []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", map[string]any{
		"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}},
	}, false)}
	const call = `{"name":"get_weather","arguments":"{\"city\":\"Paris\"}","call_id":"call_paris0001"}`
	cases := []struct {
		name   string
		params responses.ResponseNewParams
		step   relaytest.Step
		types  []string // kinds of output items
	}{
		{name: "text", params: responses.ResponseNewParams{Input: userText("tell me a story")}, types: []string{"message"}},
		{name: "reasoning", params: responses.ResponseNewParams{Input: userText("think first"),
			Reasoning: shared.ReasoningParam{Effort: shared.ReasoningEffortLow}}, types: []string{"reasoning", "message"}},
		{name: "function call", params: responses.ResponseNewParams{Input: userText("weather in Paris?"), Tools: weather},
			step: relaytest.Step{FunctionCall: call}, types: []string{"function_call"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newChatEnv(t)
			client := e.sdk(keyAlice)
			c.params.Model = "gpt-5"
			e.up.Script("c1", c.step, c.step)
			j, err := client.Responses.New(t.Context(), c.params)
			if err != nil {
				t.Fatal(err)
			}
			events := collect(t, client.Responses.NewStreaming(t.Context(), c.params))
			s, before := accumulate(t, rawEvents(events))

			var types []string
			for _, it := range j.Output {
				types = append(types, it.Type)
			}
			if j.Status != "completed" || !reflect.DeepEqual(types, c.types) {
				t.Fatalf("JSON answer %s with items %v, want completed %v", j.Status, types, c.types)
			}
			if s.Status != j.Status || s.Model != j.Model || s.ID == j.ID || s.ID != events[0].Response.ID {
				t.Fatalf("stream: %s %s %s; JSON: %s %s %s", s.Status, s.Model, s.ID, j.Status, j.Model, j.ID)
			}
			if outputOf(s) != outputOf(j) {
				t.Fatalf("stream output\n%s\nJSON output\n%s", outputOf(s), outputOf(j))
			}
			if s.Usage.RawJSON() != j.Usage.RawJSON() || j.Usage.InputTokens == 0 || j.Usage.OutputTokens == 0 {
				t.Fatalf("stream usage %s, JSON usage %s", s.Usage.RawJSON(), j.Usage.RawJSON())
			}
			// What the events before the terminal one built, as the SDK's
			// accumulator reads them, is what the JSON answer holds; and
			// each kind of delta, concatenated, is its item's final text.
			if got, want := projection(before.Output), projectionOf(j); !reflect.DeepEqual(got, want) {
				t.Fatalf("accumulated from the events %q, JSON %q", got, want)
			}
			d := deltasOf(events)
			for _, it := range j.Output {
				switch it.Type {
				case "message":
					if d["response.output_text.delta"] != j.OutputText() {
						t.Fatalf("text deltas %q, JSON text %q", d["response.output_text.delta"], j.OutputText())
					}
				case "function_call":
					if d["response.function_call_arguments.delta"] != it.Arguments.OfString || it.CallID != "call_paris0001" {
						t.Fatalf("argument deltas %q, call %s %s", d["response.function_call_arguments.delta"], it.CallID, it.Arguments.OfString)
					}
				case "reasoning":
					if len(it.Content) != 1 || d["response.reasoning_text.delta"] != it.Content[0].Text || it.Content[0].Text == "" {
						t.Fatalf("reasoning deltas %q, JSON reasoning %+v", d["response.reasoning_text.delta"], it.Content)
					}
				}
			}
		})
	}
}

// A chat upstream keeps nothing: each turn of a previous_response_id
// chain reaches it with the whole history, in order, whatever mode the
// earlier turns were served in, and without earlier turns' instructions.
func TestInteropChatChainSendsHistory(t *testing.T) {
	e := newChatEnv(t)
	client := e.sdk(keyAlice)
	first, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5",
		Input: userText("my name is Ada"), Instructions: openai.String("answer briefly")})
	if err != nil {
		t.Fatal(err)
	}
	events := collect(t, client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "gpt-5",
		Input: userText("I live in Paris"), PreviousResponseID: openai.String(first.ID)}))
	second, _ := accumulate(t, rawEvents(events))
	third, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "gpt-5",
		Input: userText("where do I live"), PreviousResponseID: openai.String(second.ID), Instructions: openai.String("answer kindly")})
	if err != nil {
		t.Fatal(err)
	}
	if first.OutputText() != "Echo: my name is Ada" || second.OutputText() != "Echo: I live in Paris" ||
		third.OutputText() != "Echo: where do I live" || third.Status != "completed" {
		t.Fatalf("answers %q %q %q (%s)", first.OutputText(), second.OutputText(), third.OutputText(), third.Status)
	}

	reqs := e.chatRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d chat completions for 3 turns", len(reqs))
	}
	want := [][]string{
		{"system: answer briefly", "user: my name is Ada"},
		{"user: my name is Ada", "assistant: Echo: my name is Ada", "user: I live in Paris"},
		{"system: answer kindly", "user: my name is Ada", "assistant: Echo: my name is Ada",
			"user: I live in Paris", "assistant: Echo: I live in Paris", "user: where do I live"},
	}
	for i, r := range reqs {
		if got := chatMessages(t, r.Body); !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("turn %d reached the upstream with\n%q\nwant\n%q", i+1, got, want[i])
		}
		if gjson.GetBytes(r.Body, "previous_response_id").Exists() {
			t.Fatalf("turn %d: previous_response_id sent upstream: %s", i+1, r.Body)
		}
	}
	rows := e.rows()
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		if row.Status != "completed" || row.AccountID != "c1" {
			t.Fatalf("row %+v", row)
		}
	}
}

// chatMessages is a chat completion's messages as "role: text" lines (an
// assistant's tool calls as "assistant: call <id> <name> <args>", a tool
// message as "tool <call id>: text").
func chatMessages(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for _, m := range gjson.GetBytes(body, "messages").Array() {
		role := m.Get("role").Str
		if role == "tool" {
			role += " " + m.Get("tool_call_id").Str
		}
		c := m.Get("content")
		switch {
		case c.Type == gjson.String:
			out = append(out, role+": "+c.Str)
		case c.IsArray():
			var text string
			for _, p := range c.Array() {
				text += p.Get("text").Str
			}
			out = append(out, role+": "+text)
		case c.Type != gjson.Null || !m.Get("tool_calls").IsArray():
			t.Fatalf("message without content: %s", m.Raw)
		}
		for _, tc := range m.Get("tool_calls").Array() {
			if tc.Get("type").Str != "function" {
				t.Fatalf("tool call %s", tc.Raw)
			}
			out = append(out, strings.Join([]string{role + ": call", tc.Get("id").Str, tc.Get("function.name").Str, tc.Get("function.arguments").Str}, " "))
		}
	}
	return out
}

// A function tool on a chat account: the upstream's tool call comes back
// as a function_call with the upstream's call id; the client's
// function_call_output, sent with previous_response_id, reaches the
// upstream as the assistant's tool_calls followed by the tool message
// answering it, and the final answer completes.
func TestInteropChatFunctionCallRoundTrip(t *testing.T) {
	e := newChatEnv(t)
	client := e.sdk(keyBob)
	tools := []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", map[string]any{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required":   []string{"city"},
	}, true)}

	events := collect(t, client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{
		Model: "gpt-5", Input: userText("weather in Paris?"), Tools: tools,
	}))
	first, _ := accumulate(t, rawEvents(events))
	if first.Status != "completed" || len(first.Output) != 1 || first.Output[0].Type != "function_call" {
		t.Fatalf("first turn %s: %s", first.Status, outputOf(first))
	}
	call := first.Output[0].AsFunctionCall()
	if call.Name != "get_weather" || !strings.HasPrefix(call.CallID, "call_") || call.Arguments != `{"input":"weather in Paris?"}` ||
		call.Status != "completed" {
		t.Fatalf("call %+v", call)
	}

	output := responses.ResponseInputItemParamOfFunctionCallOutput(`{"temperature_c":21,"sky":"sunny"}`)
	output.OfFunctionCallOutput.CallID = openai.String(call.CallID)
	second, err := client.Responses.New(t.Context(), responses.ResponseNewParams{
		Model:              "gpt-5",
		PreviousResponseID: openai.String(first.ID),
		Input:              responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{output}},
		Tools:              tools,
	})
	if err != nil {
		t.Fatal(err)
	}
	if second.Status != "completed" || len(second.Output) != 1 || second.Output[0].Type != "message" ||
		second.OutputText() != `Function output received: {"temperature_c":21,"sky":"sunny"}` {
		t.Fatalf("second turn %s: %s", second.Status, outputOf(second))
	}

	reqs := e.chatRequests()
	if len(reqs) != 2 {
		t.Fatalf("%d chat completions", len(reqs))
	}
	tool := gjson.GetBytes(reqs[1].Body, "tools.0")
	if tool.Get("type").Str != "function" || tool.Get("function.name").Str != "get_weather" || !tool.Get("function.strict").Bool() ||
		tool.Get("function.parameters.required.0").Str != "city" {
		t.Fatalf("tool reached the upstream as %s", tool.Raw)
	}
	want := []string{
		"user: weather in Paris?",
		"assistant: call " + call.CallID + ` get_weather {"input":"weather in Paris?"}`,
		"tool " + call.CallID + `: {"temperature_c":21,"sky":"sunny"}`,
	}
	if got := chatMessages(t, reqs[1].Body); !reflect.DeepEqual(got, want) {
		t.Fatalf("the output reached the upstream as\n%q\nwant\n%q", got, want)
	}
	// The fake enforces the pairing as the real API does; its verdict too.
	for _, s := range e.up.Served() {
		if s.Status != "completed" {
			t.Fatalf("upstream answered %+v", s)
		}
	}
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		if row.Status != "completed" || row.UserID != "bob" {
			t.Fatalf("row %+v", row)
		}
	}
}
