package chat

import (
	"errors"
	"strings"
	"testing"
)

func TestRequest(t *testing.T) {
	tests := []struct {
		name, body, model, want string
	}{
		{"string input and instructions",
			`{"model":"gpt-x","instructions":"Be brief.","input":"Hi"}`, "up-1",
			`{"model":"up-1","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`},
		{"empty model keeps the body's",
			`{"model":"gpt-x","input":"Hi"}`, "",
			`{"model":"gpt-x","messages":[{"role":"user","content":"Hi"}]}`},
		{"message roles and content forms",
			`{"model":"m","input":[
				{"role":"developer","content":"rules"},
				{"type":"message","role":"system","content":[{"type":"input_text","text":"sys"}]},
				{"type":"message","role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]},
				{"type":"message","role":"assistant","content":[{"type":"refusal","refusal":"no"}]},
				{"type":"message","role":"user","content":[]}]}`, "m",
			`{"model":"m","messages":[
				{"role":"system","content":"rules"},
				{"role":"system","content":"sys"},
				{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
				{"role":"assistant","content":"ok"},
				{"role":"assistant","content":"no"},
				{"role":"user","content":""}]}`},
		{"input_image",
			`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"what?"},{"type":"input_image","image_url":"data:image/png;base64,AAA","detail":"low"},{"type":"input_image","image_url":"https://img.test/a.png"}]}]}`, "m",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA","detail":"low"}},{"type":"image_url","image_url":{"url":"https://img.test/a.png"}}]}]}`},
		{"function calls merge, reasoning dropped, outputs become tool messages",
			`{"model":"m","input":[
				{"role":"user","content":"weather?"},
				{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"x"},
				{"type":"function_call","call_id":"call_a","name":"get","arguments":"{\"city\":\"Oslo\"}"},
				{"type":"reasoning","id":"rs_2","summary":[]},
				{"type":"function_call","call_id":"call_b","name":"get","arguments":"{}"},
				{"type":"function_call_output","call_id":"call_a","output":"cold"},
				{"type":"function_call_output","call_id":"call_b","output":[{"type":"input_text","text":"war"},{"type":"input_text","text":"m"}]},
				{"type":"function_call","call_id":"call_c","name":"next","arguments":""},
				{"type":"function_call_output","call_id":"call_c","output":"done"}]}`, "m",
			`{"model":"m","messages":[
				{"role":"user","content":"weather?"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_a","type":"function","function":{"name":"get","arguments":"{\"city\":\"Oslo\"}"}},
					{"id":"call_b","type":"function","function":{"name":"get","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_a","content":"cold"},
				{"role":"tool","tool_call_id":"call_b","content":"warm"},
				{"role":"assistant","content":null,"tool_calls":[{"id":"call_c","type":"function","function":{"name":"next","arguments":""}}]},
				{"role":"tool","tool_call_id":"call_c","content":"done"}]}`},
		{"an assistant's text and the calls after it are one message",
			`{"model":"m","input":[
				{"role":"user","content":"go"},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
				{"type":"function_call","call_id":"call_a","name":"get","arguments":"{}"},
				{"type":"function_call_output","call_id":"call_a","output":"ok"},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"x"},{"type":"output_text","text":"y"}]},
				{"type":"function_call","call_id":"call_b","name":"get","arguments":"{}"},
				{"type":"function_call_output","call_id":"call_b","output":"ok"},
				{"role":"assistant","content":"Done."}]}`, "m",
			`{"model":"m","messages":[
				{"role":"user","content":"go"},
				{"role":"assistant","content":"Checking.","tool_calls":[{"id":"call_a","type":"function","function":{"name":"get","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_a","content":"ok"},
				{"role":"assistant","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}],"tool_calls":[{"id":"call_b","type":"function","function":{"name":"get","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_b","content":"ok"},
				{"role":"assistant","content":"Done."}]}`},
		{"function tools, choice, parallel",
			`{"model":"m","input":"x","tools":[
				{"type":"function","name":"get","description":"Get it.","parameters":{"type":"object","properties":{"a":{"type":"string"}}},"strict":true},
				{"type":"function","name":"bare"}],
				"tool_choice":{"type":"function","name":"get"},"parallel_tool_calls":false}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[
				{"type":"function","function":{"name":"get","description":"Get it.","parameters":{"type":"object","properties":{"a":{"type":"string"}}},"strict":true}},
				{"type":"function","function":{"name":"bare"}}],
				"tool_choice":{"type":"function","function":{"name":"get"}},"parallel_tool_calls":false}`},
		{"tool_choice strings", `{"model":"m","input":"x","tool_choice":"required"}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required"}`},
		{"tool_choice none", `{"model":"m","input":"x","tool_choice":"none"}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"none"}`},
		{"tool_choice auto", `{"model":"m","input":"x","tool_choice":"auto"}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"auto"}`},
		{"json_schema format",
			`{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"out","description":"d","schema":{"type":"object"},"strict":true},"verbosity":"low"}}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"out","description":"d","schema":{"type":"object"},"strict":true}}}`},
		{"json_object format", `{"model":"m","input":"x","text":{"format":{"type":"json_object"}}}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`},
		{"text format is the default", `{"model":"m","input":"x","text":{"format":{"type":"text"}}}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}]}`},
		{"sampling, limits, reasoning, user, streaming",
			`{"model":"m","input":"x","reasoning":{"effort":"high","summary":"auto"},"max_output_tokens":300,"temperature":0.2,"top_p":0.9,"user":"u-1","stream":true}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high","max_completion_tokens":300,"temperature":0.2,"top_p":0.9,"user":"u-1","stream":true,"stream_options":{"include_usage":true}}`},
		{"stream false leaves stream out", `{"model":"m","input":"x","stream":false}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}]}`},
		{"Responses-only fields are dropped",
			`{"model":"m","input":"x","store":false,"previous_response_id":"resp_1","include":["reasoning.encrypted_content"],"prompt_cache_key":"k","metadata":{"a":"b"},"background":false,"service_tier":"flex","truncation":"auto","client_metadata":{"x":"y"},"safety_identifier":"s","top_logprobs":2,"max_tool_calls":3}`, "m",
			`{"model":"m","messages":[{"role":"user","content":"x"}]}`},
		{"text with characters to escape", "{\"model\":\"m\",\"input\":\"line1\\nline2 \\\"q\\\" \\u2028\"}", "m",
			`{"model":"m","messages":[{"role":"user","content":"line1\nline2 \"q\" \u2028"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Request([]byte(tc.body), tc.model)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, got, tc.want)
		})
	}
}

func TestRequestUnsupported(t *testing.T) {
	tests := []struct {
		name, body, what, param string
	}{
		{"item_reference", `{"input":[{"type":"item_reference","id":"msg_1"}]}`, `"item_reference"`, "input[0]"},
		{"computer_call item", `{"input":[{"role":"user","content":"x"},{"type":"computer_call","call_id":"c"}]}`, `"computer_call"`, "input[1]"},
		{"custom_tool_call item", `{"input":[{"type":"custom_tool_call","call_id":"c","name":"n","input":"i"}]}`, `"custom_tool_call"`, "input[0]"},
		{"input_file part", `{"input":[{"role":"user","content":[{"type":"input_file","file_id":"file_1"}]}]}`, `"input_file"`, "input[0].content[0]"},
		{"image in an assistant message", `{"input":[{"role":"assistant","content":[{"type":"input_image","image_url":"data:x"}]}]}`, `"input_image" in a message of role "assistant"`, "input[0].content[0]"},
		{"image by file id", `{"input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}`, "input_image without image_url", "input[0].content[0]"},
		{"image in a tool output", `{"input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"data:x"}]}]}`, `"input_image"`, "input[0].output[0]"},
		{"unknown role", `{"input":[{"role":"critic","content":"x"}]}`, `"critic"`, "input[0].role"},
		{"tool_choice for a hosted tool", `{"input":"x","tool_choice":{"type":"web_search_preview"}}`, `"web_search_preview"`, "tool_choice"},
		{"tool_choice allowed_tools", `{"input":"x","tool_choice":{"type":"allowed_tools","mode":"auto","tools":[]}}`, `"allowed_tools"`, "tool_choice"},
		{"tool_choice unknown string", `{"input":"x","tool_choice":"sometimes"}`, `"sometimes"`, "tool_choice"},
		{"text.format unknown", `{"input":"x","text":{"format":{"type":"grammar"}}}`, `"grammar"`, "text.format"},
		{"stored prompt", `{"prompt":{"id":"pmpt_1"}}`, `"prompt"`, "prompt"},
		{"conversation", `{"input":"x","conversation":"conv_1"}`, `"conversation"`, "conversation"},
		{"input of another type", `{"input":42}`, "input that is neither", "input"},
	}
	for _, tool := range []string{"web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
		"code_interpreter", "computer_use_preview", "computer", "mcp", "image_generation", "local_shell", "shell",
		"custom", "apply_patch"} {
		tests = append(tests, struct{ name, body, what, param string }{"tool " + tool,
			`{"input":"x","tools":[{"type":"function","name":"f"},{"type":"` + tool + `"}]}`, `"` + tool + `"`, "tools[1]"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Request([]byte(tc.body), "m")
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (body %s), want *UnsupportedError", err, got)
			}
			if !strings.Contains(err.Error(), tc.what) {
				t.Errorf("message %q does not name %s", err, tc.what)
			}
			if ue.Param != tc.param {
				t.Errorf("param = %q, want %q", ue.Param, tc.param)
			}
		})
	}
}

func TestRequestNotJSON(t *testing.T) {
	for _, body := range []string{``, `{`, `[1]`, strings.Repeat("[", 600) + strings.Repeat("]", 600)} {
		if _, err := Request([]byte(body), "m"); err == nil {
			t.Errorf("Request(%.20q) succeeded", body)
		}
	}
}
