package main

// A Chat Completions account behind relayd, continued: the events the SDK
// reads (SSE and WebSocket), failover away from the account, the usage
// rows its turns leave, and the answer's format and length limits.

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// sdkEventTypes is every event type of the SDK's streaming event union,
// read from the union's variants (each As method's result has a constant
// type whose Default is the wire name), so the list is the SDK's own.
func sdkEventTypes(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	u := reflect.ValueOf(responses.ResponseStreamEventUnion{})
	for i := range u.NumMethod() {
		m := u.Type().Method(i)
		if !strings.HasPrefix(m.Name, "As") || m.Type.NumIn() != 1 || m.Type.NumOut() != 1 {
			continue
		}
		v := u.Method(i).Call(nil)[0]
		if v.Kind() != reflect.Struct {
			continue
		}
		f := v.FieldByName("Type")
		if !f.IsValid() {
			continue
		}
		if d := f.MethodByName("Default"); d.IsValid() {
			known[d.Call(nil)[0].String()] = true
		}
	}
	if len(known) < 40 || !known["response.completed"] || !known["response.output_text.delta"] {
		t.Fatalf("the SDK's event types could not be read: %v", known)
	}
	return known
}

// Every event relayd streams for a chat account, whatever the answer's
// shape and however the upstream frames its chunks, parses as the SDK's
// event union with a type the SDK knows, and the sequence numbers count
// from 0 without a gap.
func TestInteropChatSSEEvents(t *testing.T) {
	known := sdkEventTypes(t)
	tools := []responses.ToolUnionParam{responses.ToolParamOfFunction("lookup", map[string]any{"type": "object"}, false)}
	cases := []struct {
		name   string
		params responses.ResponseNewParams
		step   relaytest.Step
		last   string
	}{
		{name: "text", params: responses.ResponseNewParams{Input: userText("hello there")}, last: "response.completed"},
		{name: "reasoning", params: responses.ResponseNewParams{Input: userText("think"),
			Reasoning: shared.ReasoningParam{Effort: shared.ReasoningEffortHigh}}, last: "response.completed"},
		{name: "function call", params: responses.ResponseNewParams{Input: userText("look it up"), Tools: tools}, last: "response.completed"},
		{name: "upstream framing", params: responses.ResponseNewParams{Input: userText("framed oddly")},
			step: relaytest.Step{Deltas: 9, Events: "crlf multiline comments"}, last: "response.completed"},
		{name: "length", params: responses.ResponseNewParams{Input: userText("long one"), MaxOutputTokens: openai.Int(2)},
			last: "response.incomplete"},
		{name: "content filter", params: responses.ResponseNewParams{Input: userText("filtered")},
			step: relaytest.Step{End: "incomplete content_filter"}, last: "response.incomplete"},
		{name: "failed after output", params: responses.ResponseNewParams{Input: userText("breaks")},
			step: relaytest.Step{End: "failed server_error"}, last: "response.failed"},
	}
	e := newChatEnv(t)
	client := e.sdk(keyAlice)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.up.Script("c1", c.step)
			c.params.Model = "gpt-5"
			events := collect(t, client.Responses.NewStreaming(t.Context(), c.params))
			for i, ev := range events {
				if ev.SequenceNumber != int64(i) || !ev.JSON.SequenceNumber.Valid() {
					t.Fatalf("event %d (%s) has sequence number %s", i, ev.Type, ev.JSON.SequenceNumber.Raw())
				}
				if !known[ev.Type] {
					t.Fatalf("event %d has a type the SDK does not know: %s", i, ev.RawJSON())
				}
				var again responses.ResponseStreamEventUnion
				if err := again.UnmarshalJSON([]byte(ev.RawJSON())); err != nil || again.Type != ev.Type {
					t.Fatalf("event %d does not parse again: %v", i, err)
				}
			}
			if events[0].Type != "response.created" || events[len(events)-1].Type != c.last {
				t.Fatalf("events from %s to %s, want response.created to %s", events[0].Type, events[len(events)-1].Type, c.last)
			}
			// The SDK's accumulator takes every event: indices, ids and the
			// terminal response are what it validates.
			r, _ := accumulate(t, rawEvents(events))
			if r.ID != events[0].Response.ID || "response."+string(r.Status) != c.last {
				t.Fatalf("accumulated %s %s", r.ID, r.Status)
			}
		})
	}
}

// Over relayd's WebSocket mode a chat account serves two chained turns,
// store:false as Codex sends them: the second reaches the upstream as one
// chat completion with the first turn's input and answer before its own.
func TestInteropChatWebSocket(t *testing.T) {
	e := newChatEnv(t)
	conn := e.connect(keyAlice)
	var acc responses.ResponseAccumulator
	turn := func(p openai.BetaResponsesClientEventResponseCreateParam) (openai.BetaResponse, string) {
		t.Helper()
		p.Store = openai.Bool(false)
		events := wsTurn(t, conn, p)
		for i, ev := range events {
			if seq := gjson.Get(ev.RawJSON(), "sequence_number"); seq.Type != gjson.Number || seq.Int() != int64(i) {
				t.Fatalf("frame %d (%s) has sequence number %s", i, ev.Type, seq.Raw)
			}
			var se responses.ResponsesServerEventUnion
			if err := se.UnmarshalJSON([]byte(ev.RawJSON())); err != nil {
				t.Fatal(err)
			}
			if err := acc.AddEvent(se); err != nil {
				t.Fatalf("the SDK's accumulator refused frame %d: %v", i, err)
			}
		}
		resp, text := completedTurn(t, events)
		final, err := acc.ReconstructedResponse()
		if err != nil || final.ID != resp.ID || final.OutputText() != text || acc.Snapshot().OutputText() != text {
			t.Fatalf("deltas %q, accumulated %q, final %v %+v", text, acc.Snapshot().OutputText(), err, final)
		}
		acc.Reset()
		return resp, text
	}
	first, text := turn(wsCreate("my name is Ada"))
	if text != "Echo: my name is Ada" {
		t.Fatalf("first turn: %q", text)
	}
	p := wsCreate("what is my name")
	p.PreviousResponseID = openai.String(first.ID)
	second, text := turn(p)
	if text != "Echo: what is my name" || second.ID == first.ID {
		t.Fatalf("second turn: %q %s", text, second.ID)
	}

	if traffic := e.upstreamTraffic(); len(traffic) != 1 || !reflect.DeepEqual(traffic["c1"], map[string]int{"POST": 2}) {
		t.Fatalf("upstream traffic %v; want two chat completions on c1", traffic)
	}
	reqs := e.chatRequests()
	want := []string{"user: my name is Ada", "assistant: Echo: my name is Ada", "user: what is my name"}
	if len(reqs) != 2 || !reflect.DeepEqual(chatMessages(t, reqs[1].Body), want) || !gjson.GetBytes(reqs[1].Body, "stream").Bool() {
		t.Fatalf("second turn reached the upstream as %s", reqs[len(reqs)-1].Body)
	}
	rows := wsRows(t, e)
	served := e.up.Served()
	if len(rows) != 2 || len(served) != 2 {
		t.Fatalf("%d rows, %d upstream answers", len(rows), len(served))
	}
	for i, row := range rows {
		if row.Transport != "ws" || row.Turn != int64(i+1) || row.Status != "completed" || row.AccountID != "c1" {
			t.Fatalf("row %d: %+v", i, row)
		}
		checkUsage(t, row, served[i].Usage)
	}
	if rows[0].ResponseID != first.ID || rows[1].ResponseID != second.ID {
		t.Fatalf("rows name %s and %s, the client got %s and %s", rows[0].ResponseID, rows[1].ResponseID, first.ID, second.ID)
	}
}

// A 429 from the chat account moves the turn to the Responses account of
// the same group: the client sees only the success, the row says two
// attempts.
func TestInteropChatFailover(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "json", true: "stream"}[stream]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, []string{"c1", "r1"}, func(c *Config) {
				c.Accounts[0].WireAPI = "chat"
				c.Accounts[1].Priority = 1 // the chat account is tried first
			})
			e.up.Script("c1", relaytest.Step{Status: 429})
			client := e.sdk(keyAlice)
			params := responses.ResponseNewParams{Model: "gpt-5", Input: userText("moved along")}
			var resp *responses.Response
			if stream {
				resp, _ = accumulate(t, rawEvents(collect(t, client.Responses.NewStreaming(t.Context(), params))))
			} else {
				var err error
				if resp, err = client.Responses.New(t.Context(), params); err != nil {
					t.Fatal(err)
				}
			}
			if resp.Status != "completed" || resp.OutputText() != "Echo: moved along" {
				t.Fatalf("response %s %q", resp.Status, resp.OutputText())
			}
			reqs := e.up.Requests()
			if len(reqs) != 2 || reqs[0].Account != "c1" || !strings.HasSuffix(reqs[0].Path, "/chat/completions") ||
				reqs[1].Account != "r1" || !strings.HasSuffix(reqs[1].Path, "/responses") {
				t.Fatalf("upstream requests %+v", reqs)
			}
			rows := e.rows()
			if len(rows) != 1 {
				t.Fatalf("%d rows", len(rows))
			}
			for _, row := range rows {
				if row.Attempts != 2 || row.AccountID != "r1" || row.Status != "completed" || row.ResponseID != resp.ID || row.Stream != stream {
					t.Fatalf("row %+v", row)
				}
				checkUsage(t, row, servedByResponse(e.up.Upstream)[resp.ID].Usage)
			}
		})
	}
}

// The rows of chat turns carry the upstream's own token counts, cached
// and reasoning tokens included, JSON or streamed; a stream that ends
// without its usage chunk is never a free turn: its row says
// upstream_error.
func TestInteropChatUsageRows(t *testing.T) {
	e := newChatEnv(t)
	client := e.sdk(keyAlice)
	counts := map[string]relaytest.Usage{
		"json":   {Input: 4321, Cached: 1234, Output: 321, Reasoning: 123},
		"stream": {Input: 5432, Cached: 2345, Output: 432, Reasoning: 234},
	}
	byID := map[string]string{} // response id → case
	for _, name := range []string{"json", "stream"} {
		u := counts[name]
		e.up.Script("c1", relaytest.Step{Usage: &u})
		params := responses.ResponseNewParams{Model: "gpt-5", Input: userText("count me " + name)}
		var resp *responses.Response
		if name == "stream" {
			resp, _ = accumulate(t, rawEvents(collect(t, client.Responses.NewStreaming(t.Context(), params))))
		} else {
			var err error
			if resp, err = client.Responses.New(t.Context(), params); err != nil {
				t.Fatal(err)
			}
		}
		got := relaytest.Usage{Input: resp.Usage.InputTokens, Cached: resp.Usage.InputTokensDetails.CachedTokens,
			Output: resp.Usage.OutputTokens, Reasoning: resp.Usage.OutputTokensDetails.ReasoningTokens}
		if got != u || resp.Usage.TotalTokens != u.Input+u.Output {
			t.Fatalf("%s: the SDK read usage %+v (total %d), the upstream sent %+v", name, got, resp.Usage.TotalTokens, u)
		}
		byID[resp.ID] = name
	}

	// Without the usage chunk: a clean end (finish_reason and [DONE]) and
	// an end right after the output.
	noUsage := []struct {
		name string
		step relaytest.Step
		last string
	}{
		{"no usage chunk", relaytest.Step{Events: "nousage"}, "response.completed"},
		{"no end", relaytest.Step{End: "none"}, "response.failed"},
	}
	for _, c := range noUsage {
		e.up.Script("c1", c.step)
		events := collect(t, client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "gpt-5", Input: userText(c.name)}))
		if last := events[len(events)-1]; last.Type != c.last || !strings.Contains(deltasOf(events)["response.output_text.delta"], c.name) {
			t.Fatalf("%s: stream ended with %s: %s", c.name, last.Type, last.RawJSON())
		}
		byID[events[0].Response.ID] = c.name
	}

	rows := e.rows()
	served := e.up.Served()
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		switch name := byID[row.ResponseID]; name {
		case "json", "stream":
			if row.Status != "completed" || row.Stream != (name == "stream") {
				t.Fatalf("%s: row %+v", name, row)
			}
			checkUsage(t, row, counts[name])
		case "no usage chunk", "no end":
			if row.Status != "upstream_error" || row.AccountID != "c1" {
				t.Fatalf("%s: row %+v", name, row)
			}
		default:
			t.Fatalf("row for a response no client got: %+v", row)
		}
	}
	// The fake's log says the last two streams went as scripted: one ended
	// cleanly without usage, one was cut after the output.
	if len(served) != 4 || served[2].Status != "completed" || served[2].Usage != (relaytest.Usage{}) || served[3].Status != "aborted" {
		t.Fatalf("upstream answers %+v", served)
	}
}

// text.format json_schema reaches the chat upstream as response_format
// json_schema, and the answer's text is the JSON it asked for, streamed or
// not.
func TestInteropChatJSONSchema(t *testing.T) {
	e := newChatEnv(t)
	client := e.sdk(keyAlice)
	params := responses.ResponseNewParams{
		Model: "gpt-5",
		Input: userText("echo this"),
		Text: responses.ResponseTextConfigParam{Format: responses.ResponseFormatTextConfigUnionParam{
			OfJSONSchema: &responses.ResponseFormatTextJSONSchemaConfigParam{
				Name:   "echo",
				Strict: openai.Bool(true),
				Schema: map[string]any{
					"type":                 "object",
					"properties":           map[string]any{"echo": map[string]any{"type": "string"}},
					"required":             []string{"echo"},
					"additionalProperties": false,
				},
			},
		}},
	}
	j, err := client.Responses.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := accumulate(t, rawEvents(collect(t, client.Responses.NewStreaming(t.Context(), params))))
	for _, r := range []*responses.Response{j, s} {
		var v struct {
			Echo string `json:"echo"`
		}
		if err := json.Unmarshal([]byte(r.OutputText()), &v); err != nil || v.Echo != "Echo: echo this" || r.Status != "completed" {
			t.Fatalf("output text %q (%s): %v", r.OutputText(), r.Status, err)
		}
	}
	for i, q := range e.chatRequests() {
		f := gjson.GetBytes(q.Body, "response_format")
		if f.Get("type").Str != "json_schema" || f.Get("json_schema.name").Str != "echo" || !f.Get("json_schema.strict").Bool() ||
			f.Get("json_schema.schema.properties.echo.type").Str != "string" || f.Get("json_schema.schema.additionalProperties").Raw != "false" {
			t.Fatalf("request %d: response_format %s", i, f.Raw)
		}
	}
}

// max_output_tokens reached on a chat account (finish_reason "length") is
// an incomplete response whose reason is max_output_tokens, in JSON and as
// the stream's terminal event; the row says incomplete.
func TestInteropChatMaxOutputTokens(t *testing.T) {
	e := newChatEnv(t)
	client := e.sdk(keyAlice)
	params := responses.ResponseNewParams{Model: "gpt-5", Input: userText("a long answer please"), MaxOutputTokens: openai.Int(3)}
	j, err := client.Responses.New(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(t, client.Responses.NewStreaming(t.Context(), params))
	last := events[len(events)-1]
	s, _ := accumulate(t, rawEvents(events))
	if last.Type != "response.incomplete" {
		t.Fatalf("stream ended with %s", last.Type)
	}
	for _, r := range []*responses.Response{j, s} {
		if r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" || r.Usage.OutputTokens != 3 ||
			r.OutputText() == "" || len(r.OutputText()) >= len("Echo: a long answer please") {
			t.Fatalf("response %s %q, %d output tokens, text %q", r.Status, r.IncompleteDetails.Reason, r.Usage.OutputTokens, r.OutputText())
		}
	}
	for i, q := range e.chatRequests() {
		if gjson.GetBytes(q.Body, "max_completion_tokens").Int() != 3 {
			t.Fatalf("request %d: %s", i, q.Body)
		}
	}
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, row := range rows {
		if row.Status != "incomplete" || row.Output != 3 {
			t.Fatalf("row %+v", row)
		}
	}
}
