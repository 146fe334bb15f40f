package chat

import (
	"errors"
	"strings"
	"testing"
)

const chatUsage = `"usage":{"prompt_tokens":75,"completion_tokens":155,"total_tokens":230,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":128}}`

const respUsage = `"usage":{"input_tokens":75,"input_tokens_details":{"cached_tokens":64},"output_tokens":155,"output_tokens_details":{"reasoning_tokens":128},"total_tokens":230}`

func TestResponse(t *testing.T) {
	head := `{"id":"resp_1","object":"response","created_at":1700000000,`
	tests := []struct {
		name, chat, want string
	}{
		{"text",
			`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"up-1","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"you\""},"finish_reason":"stop"}],` + chatUsage + `}`,
			head + `"status":"completed","error":null,"incomplete_details":null,"model":"gpt-x","output":[
				{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello \"you\""}],"role":"assistant"}],` + respUsage + `}`},
		{"reasoning, text and two calls",
			`{"created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","reasoning_content":"think","content":"Checking.","tool_calls":[
				{"id":"call_a","type":"function","function":{"name":"get","arguments":"{\"c\":1}"}},
				{"id":"call_b","type":"function","function":{"name":"put","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`,
			head + `"status":"completed","error":null,"incomplete_details":null,"model":"gpt-x","output":[
				{"id":"rs_1","type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"think"}]},
				{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Checking."}],"role":"assistant"},
				{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"c\":1}","call_id":"call_a","name":"get"},
				{"id":"fc_2","type":"function_call","status":"completed","arguments":"{}","call_id":"call_b","name":"put"}],` + respUsage + `}`},
		{"only calls, content null, reasoning named reasoning",
			`{"created":1700000000,"choices":[{"message":{"role":"assistant","content":null,"reasoning":"r","tool_calls":[{"id":"call_a","type":"function","function":{"name":"get","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`,
			head + `"status":"completed","error":null,"incomplete_details":null,"model":"gpt-x","output":[
				{"id":"rs_1","type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"r"}]},
				{"id":"fc_1","type":"function_call","status":"completed","arguments":"{}","call_id":"call_a","name":"get"}],` + respUsage + `}`},
		{"length is incomplete, the last item cut",
			`{"created":1700000000,"choices":[{"message":{"role":"assistant","reasoning_content":"long","content":"Hal"},"finish_reason":"length"}],` + chatUsage + `}`,
			head + `"status":"incomplete","error":null,"incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-x","output":[
				{"id":"rs_1","type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"long"}]},
				{"id":"msg_1","type":"message","status":"incomplete","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hal"}],"role":"assistant"}],` + respUsage + `}`},
		{"content_filter is incomplete",
			`{"created":1700000000,"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"content_filter"}],` + chatUsage + `}`,
			head + `"status":"incomplete","error":null,"incomplete_details":{"reason":"content_filter"},"model":"gpt-x","output":[],` + respUsage + `}`},
		{"usage without details or total",
			`{"created":1700000000,"choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
			head + `"status":"completed","error":null,"incomplete_details":null,"model":"gpt-x","output":[
				{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"a"}],"role":"assistant"}],
				"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Response([]byte(tc.chat), seqIDs(), "gpt-x", nil)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, got, tc.want)
		})
	}
}

func TestResponseErrors(t *testing.T) {
	got, err := Response([]byte(`{"created":5,"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}`), seqIDs(), "m", nil)
	if !errors.Is(err, ErrNoUsage) {
		t.Errorf("no usage: err = %v, want ErrNoUsage", err)
	}
	sameJSON(t, got, `{"id":"resp_1","object":"response","created_at":5,"status":"completed","error":null,"incomplete_details":null,"model":"m","output":[
		{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"a"}],"role":"assistant"}],"usage":null}`)

	_, err = Response([]byte(`{"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}`), seqIDs(), "m", nil)
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Message != "overloaded" || ue.Type != "server_error" || ue.Code != "overloaded" {
		t.Errorf("error body: err = %#v", err)
	}
	many := `{"choices":[{"message":{"tool_calls":[` + strings.Repeat(`{"id":"c"},`, maxItems) + `{"id":"c"}]}}]}`
	for _, body := range []string{`{"choices":[]}`, `{}`, `not json`, `[]`, many} {
		if _, err := Response([]byte(body), seqIDs(), "m", nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("Response(%s): err = %v, want ErrMalformed", body, err)
		}
	}
}
