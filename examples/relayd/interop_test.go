package main

// Interop with the official openai-go SDK: the SDK talks to relayd exactly
// as it talks to the OpenAI API, and relayd forwards to the relaytest fake.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// sdk returns an SDK client for the env with the given key.
func (e *env) sdk(key string) openai.Client {
	return newSDK(e.ts.URL+"/v1", key, e.ts.Client()) // closed with the server
}

// newSDK is an SDK client of relayd at baseURL (ending in /v1).
func newSDK(baseURL, key string, hc *http.Client) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(baseURL),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
		option.WithHTTPClient(hc),
	)
}

func userText(s string) responses.ResponseNewParamsInputUnion {
	return responses.ResponseNewParamsInputUnion{OfString: openai.String(s)}
}

func TestInteropJSON(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	client := e.sdk(keyAlice)
	resp, err := client.Responses.New(t.Context(), responses.ResponseNewParams{
		Model:        "gpt-5",
		Input:        userText("hello from the sdk"),
		Instructions: openai.String("be brief"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.OutputText(); got != "Echo: hello from the sdk" {
		t.Fatalf("output text %q", got)
	}
	if resp.Status != "completed" || !strings.HasPrefix(resp.ID, "resp_") || resp.Model != "gpt-5" {
		t.Fatalf("response %s %s %s", resp.Status, resp.ID, resp.Model)
	}
	served := servedByResponse(e.up.Upstream)[resp.ID]
	want := served.Usage
	if resp.Usage.InputTokens != want.Input || resp.Usage.OutputTokens != want.Output ||
		resp.Usage.TotalTokens != (want.Input+want.Output) || resp.Usage.InputTokensDetails.CachedTokens != want.Cached {
		t.Fatalf("SDK usage %+v, upstream sent %+v", resp.Usage, want)
	}
	// The SDK's identifying headers reach the upstream; its key does not.
	r := e.up.Requests()[0]
	if !strings.Contains(r.Header.Get("User-Agent"), "OpenAI/Go") || r.Header.Get("Authorization") != "Bearer "+upstreamKey("a1") {
		t.Fatalf("upstream headers: UA %q, auth %q", r.Header.Get("User-Agent"), r.Header.Get("Authorization"))
	}

	rows := e.rows()
	if len(rows) != 1 {
		t.Fatalf("rows = %d", len(rows))
	}
	for _, row := range rows {
		if row.ResponseID != resp.ID || row.Stream {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, want)
	}
}

func TestInteropStreaming(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	e.up.Script("a1", relaytest.Step{Deltas: 12, Usage: &relaytest.Usage{Input: 40, Cached: 8, Output: 12, Reasoning: 4}})
	client := e.sdk(keyAlice)
	stream := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{
		Model: "gpt-5",
		Input: userText("stream this please"),
	})
	defer stream.Close()

	var (
		deltas, doneText string
		types            []string
		seq              []int64
		completed        *responses.Response
	)
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		seq = append(seq, ev.SequenceNumber)
		switch ev.Type {
		case "response.output_text.delta":
			deltas += ev.Delta
		case "response.output_text.done":
			doneText = ev.AsResponseOutputTextDone().Text
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if completed == nil || types[0] != "response.created" || types[len(types)-1] != "response.completed" {
		t.Fatalf("event types %v", types)
	}
	for i, n := range seq {
		if n != int64(i) {
			t.Fatalf("sequence numbers %v: position %d is %d", seq, i, n)
		}
	}
	if strings.Count(strings.Join(types, " "), "response.output_text.delta") != 12 {
		t.Fatalf("want 12 deltas: %v", types)
	}
	if deltas == "" || deltas != doneText || deltas != completed.OutputText() {
		t.Fatalf("deltas %q, done %q, completed %q", deltas, doneText, completed.OutputText())
	}
	u := completed.Usage
	if u.InputTokens != 40 || u.InputTokensDetails.CachedTokens != 8 || u.OutputTokens != 12 ||
		u.OutputTokensDetails.ReasoningTokens != 4 || u.TotalTokens != 52 {
		t.Fatalf("usage on response.completed = %+v", u)
	}

	rows := e.rows()
	if len(rows) != 1 {
		t.Fatalf("rows = %d", len(rows))
	}
	for _, row := range rows {
		if row.ResponseID != completed.ID || !row.Stream || row.Status != "completed" {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, relaytest.Usage{Input: 40, Cached: 8, Output: 12, Reasoning: 4})
	}
}

// A previous_response_id chain stays on the account that holds the
// previous response (the fake knows a response only on that account, so
// anywhere else the turn would fail with previous_response_not_found).
func TestInteropPreviousResponseChain(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2", "a3"}, nil)
	client := e.sdk(keyAlice)
	for chain := range 4 {
		first, err := client.Responses.New(t.Context(), responses.ResponseNewParams{
			Model: "gpt-5", Input: userText("my name is Ada"),
		})
		if err != nil {
			t.Fatalf("chain %d first: %v", chain, err)
		}
		second, err := client.Responses.New(t.Context(), responses.ResponseNewParams{
			Model: "gpt-5", Input: userText("what is my name"), PreviousResponseID: openai.String(first.ID),
		})
		if err != nil {
			t.Fatalf("chain %d second: %v", chain, err)
		}
		if second.OutputText() != "Echo: what is my name" {
			t.Fatalf("chain %d: %q", chain, second.OutputText())
		}
		// The fake counts the previous turn as cached input.
		if second.Usage.InputTokensDetails.CachedTokens != first.Usage.InputTokens {
			t.Fatalf("chain %d: cached %d, want %d", chain, second.Usage.InputTokensDetails.CachedTokens, first.Usage.InputTokens)
		}
		reqs := e.up.Requests()
		a, b := reqs[len(reqs)-2], reqs[len(reqs)-1]
		if a.Account != b.Account {
			t.Fatalf("chain %d: first on %s, second on %s", chain, a.Account, b.Account)
		}
	}
	for _, s := range e.up.Served() {
		if s.Status != "completed" {
			t.Fatalf("upstream answer %+v", s)
		}
	}
}

// Tools: the first turn yields a function call (streamed, with argument
// deltas), the second sends its output with previous_response_id and gets
// text back.
func TestInteropFunctionCallRoundTrip(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2"}, nil)
	client := e.sdk(keyBob)
	tools := []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", map[string]any{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required":   []string{"city"},
	}, false)}

	stream := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{
		Model: "gpt-5",
		Input: userText("weather in Paris?"),
		Tools: tools,
	})
	var (
		argDeltas, argsDone string
		first               *responses.Response
	)
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "response.function_call_arguments.delta":
			argDeltas += ev.Delta
		case "response.function_call_arguments.done":
			argsDone = ev.Arguments
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			first = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if first == nil || len(first.Output) != 1 || first.Output[0].Type != "function_call" {
		t.Fatalf("first turn output: %+v", first)
	}
	call := first.Output[0].AsFunctionCall()
	if call.Name != "get_weather" || !strings.HasPrefix(call.CallID, "call_") || call.Arguments == "" ||
		argDeltas != call.Arguments || argsDone != call.Arguments {
		t.Fatalf("call %+v; deltas %q; done %q", call, argDeltas, argsDone)
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
	if second.Output[0].Type != "message" || !strings.Contains(second.OutputText(), "sunny") {
		t.Fatalf("second turn: %q %+v", second.OutputText(), second.Output)
	}
	reqs := e.up.Requests()
	if len(reqs) != 2 || reqs[0].Account != reqs[1].Account {
		t.Fatalf("round trip split across accounts: %d requests", len(reqs))
	}
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("rows = %d", len(rows))
	}
}

// Each validation row of the design answers an error the SDK exposes with
// the right status, type, message and param, before any upstream contact.
func TestInteropErrorShapes(t *testing.T) {
	const smallLimit = 64 << 10
	e := newEnv(t, []string{"a1"}, nil, func(s *server) { s.relay.MaxBodyBytes = smallLimit })
	client := e.sdk(keyAlice)
	input := userText("hi")
	outputItem := func(callID string) responses.ResponseNewParamsInputUnion {
		item := responses.ResponseInputItemParamOfFunctionCallOutput("42")
		if callID != "" {
			item.OfFunctionCallOutput.CallID = openai.String(callID)
		}
		return responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{item}}
	}
	guidance := []string{"call_id", "previous_response_id", "store=true"}

	cases := []struct {
		name      string
		params    responses.ResponseNewParams
		opts      []option.RequestOption
		stream    bool
		status    int
		typ       string
		message   string   // exact, when set
		contains  []string // otherwise these parts
		param     string
		nullParam bool
		code      string
	}{
		{name: "missing model", params: responses.ResponseNewParams{Input: input},
			status: 400, typ: "invalid_request_error", message: "model is required", param: "model"},
		{name: "missing model, streaming", params: responses.ResponseNewParams{Input: input}, stream: true,
			status: 400, typ: "invalid_request_error", message: "model is required", param: "model"},
		{name: "empty model", params: responses.ResponseNewParams{Model: "", Input: input}, opts: []option.RequestOption{option.WithJSONSet("model", "")},
			status: 400, typ: "invalid_request_error", message: "model is required", param: "model"},
		{name: "model not a string", params: responses.ResponseNewParams{Input: input}, opts: []option.RequestOption{option.WithJSONSet("model", 5)},
			status: 400, typ: "invalid_request_error", message: "model is required", param: "model"},
		{name: "stream not a boolean", params: responses.ResponseNewParams{Model: "gpt-5", Input: input},
			opts:   []option.RequestOption{option.WithJSONSet("stream", "yes")},
			status: 400, typ: "invalid_request_error", message: "invalid stream field type", param: "stream"},
		{name: "previous_response_id is a message id", params: responses.ResponseNewParams{Model: "gpt-5", Input: input, PreviousResponseID: openai.String("msg_0123456789abcdef")},
			status: 400, typ: "invalid_request_error", message: "previous_response_id must be a response.id (resp_*), not a message id", param: "previous_response_id"},
		{name: "previous_response_id is a function call id", params: responses.ResponseNewParams{Model: "gpt-5", Input: input, PreviousResponseID: openai.String("fc_0123")},
			status: 400, typ: "invalid_request_error", message: "previous_response_id must be a response.id (resp_*), not a message id", param: "previous_response_id"},
		{name: "function_call_output without call_id", params: responses.ResponseNewParams{Model: "gpt-5", Input: outputItem("")},
			status: 400, typ: "invalid_request_error", contains: guidance, param: "input"},
		{name: "orphan function_call_output", params: responses.ResponseNewParams{Model: "gpt-5", Input: outputItem("call_nowhere")},
			status: 400, typ: "invalid_request_error", contains: append([]string{"call_nowhere"}, guidance...), param: "input"},
		{name: "body too large", params: responses.ResponseNewParams{Model: "gpt-5", Input: userText(strings.Repeat("a", smallLimit+1))},
			status: 413, typ: "invalid_request_error", contains: []string{"too large"}, nullParam: true},
		{name: "body too large, streaming", params: responses.ResponseNewParams{Model: "gpt-5", Input: userText(strings.Repeat("a", smallLimit+1))}, stream: true,
			status: 413, typ: "invalid_request_error", contains: []string{"too large"}, nullParam: true},
		{name: "empty body", opts: []option.RequestOption{option.WithRequestBody("application/json", []byte{})},
			status: 400, typ: "invalid_request_error", message: "Request body is empty", nullParam: true},
		{name: "not JSON", opts: []option.RequestOption{option.WithRequestBody("application/json", []byte(`{"model": "gpt-5",`))},
			status: 400, typ: "invalid_request_error", message: "Failed to parse request body", nullParam: true},
		{name: "bad key", params: responses.ResponseNewParams{Model: "gpt-5", Input: input}, opts: []option.RequestOption{option.WithAPIKey("rk-test-nobody")},
			status: 401, typ: "authentication_error", message: "Invalid API key", nullParam: true, code: "invalid_api_key"},
		{name: "bad key, streaming", params: responses.ResponseNewParams{Model: "gpt-5", Input: input}, stream: true, opts: []option.RequestOption{option.WithAPIKey("rk-test-nobody")},
			status: 401, typ: "authentication_error", message: "Invalid API key", nullParam: true, code: "invalid_api_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.stream {
				s := client.Responses.NewStreaming(t.Context(), c.params, c.opts...)
				for s.Next() {
					t.Fatalf("event %q before the error", s.Current().Type)
				}
				err = s.Err()
				s.Close()
			} else {
				var resp *responses.Response
				resp, err = client.Responses.New(t.Context(), c.params, c.opts...)
				if err == nil {
					t.Fatalf("no error; response %s", resp.ID)
				}
			}
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %T %v is not an *openai.Error", err, err)
			}
			if apiErr.StatusCode != c.status || apiErr.Type != c.typ {
				t.Fatalf("status %d type %q, want %d %q; body %s", apiErr.StatusCode, apiErr.Type, c.status, c.typ, apiErr.RawJSON())
			}
			if c.message != "" && apiErr.Message != c.message {
				t.Fatalf("message %q, want %q", apiErr.Message, c.message)
			}
			for _, part := range c.contains {
				if !strings.Contains(apiErr.Message, part) {
					t.Fatalf("message %q lacks %q", apiErr.Message, part)
				}
			}
			if apiErr.Param != c.param || apiErr.Code != c.code {
				t.Fatalf("param %q code %q, want %q %q", apiErr.Param, apiErr.Code, c.param, c.code)
			}
			// All four keys are always present, null when unset.
			for _, f := range []struct {
				name  string
				valid bool
			}{{"message", apiErr.JSON.Message.Valid()}, {"type", apiErr.JSON.Type.Valid()}} {
				if !f.valid {
					t.Fatalf("%s missing: %s", f.name, apiErr.RawJSON())
				}
			}
			if !apiErr.JSON.Param.Valid() && !c.nullParam {
				t.Fatalf("param missing: %s", apiErr.RawJSON())
			}
			if c.nullParam && !strings.Contains(apiErr.RawJSON(), `"param":null`) {
				t.Fatalf("param not null: %s", apiErr.RawJSON())
			}
			if !strings.Contains(apiErr.RawJSON(), `"code":`) {
				t.Fatalf("code missing: %s", apiErr.RawJSON())
			}
		})
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests; validation must answer first", n)
	}
	if rows := e.rows(); len(rows) != 0 {
		t.Fatalf("rejected requests left %d usage rows", len(rows))
	}
}

// An upstream error the relay passes through (not a failover status) keeps
// its shape for the SDK: an unknown previous_response_id.
func TestInteropUpstreamErrorPassesThrough(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	client := e.sdk(keyAlice)
	_, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "gpt-5", Input: userText("hi"), PreviousResponseID: openai.String("resp_doesnotexist"),
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v", err)
	}
	if apiErr.StatusCode != 400 || apiErr.Code != "previous_response_not_found" || apiErr.Param != "previous_response_id" ||
		apiErr.Type != "invalid_request_error" || !strings.Contains(apiErr.Message, "resp_doesnotexist") {
		t.Fatalf("error %d %s %s %s %q", apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Param, apiErr.Message)
	}
	if n := len(e.up.Requests()); n != 1 {
		t.Fatalf("upstream requests = %d, want 1 (no failover on a client error)", n)
	}
}
