package chat

import (
	"testing"

	"github.com/tidwall/gjson"
)

func TestEcho(t *testing.T) {
	body := []byte(`{"model":"m","input":"x","instructions":"be brief","max_output_tokens":64,"tools":[{"type":"function","name":"f"}],"text":{"format":{"type":"json_object"}},"previous_response_id":"resp_1","temperature":0.2}`)
	obj := append(append([]byte(`{"id":"resp_2"`), Echo(body)...), '}')
	if !gjson.ValidBytes(obj) {
		t.Fatalf("not JSON: %s", obj)
	}
	want := map[string]string{
		"instructions": `"be brief"`, "max_output_tokens": "64", "tools": `[{"type":"function","name":"f"}]`,
		"text": `{"format":{"type":"json_object"}}`, "previous_response_id": `"resp_1"`, "temperature": "0.2",
		"store": "true", "tool_choice": `"auto"`, "metadata": "{}", "parallel_tool_calls": "true", "top_p": "1.0",
	}
	for k, v := range want {
		if got := gjson.GetBytes(obj, k).Raw; got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	if gjson.GetBytes(obj, "input").Exists() || gjson.GetBytes(obj, "model").Exists() {
		t.Errorf("a member that is not an echo: %s", obj)
	}
}

// TestEchoStreamEqualsJSON: the streamed terminal response carries the
// same echoes as the JSON answer.
func TestEchoStreamEqualsJSON(t *testing.T) {
	echo := Echo([]byte(`{"model":"m","input":"x","instructions":"hi","max_output_tokens":5}`))
	answer := `{"id":"c","created":5,"choices":[{"message":{"content":"ab"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`
	want, err := Response([]byte(answer), seqIDs(), "m", echo)
	if err != nil {
		t.Fatal(err)
	}
	st := NewStream(seqIDs(), "m", 5)
	st.Echo(echo)
	var ev Events
	for _, c := range []string{
		`{"id":"c","created":5,"choices":[{"index":0,"delta":{"content":"ab"}}]}`,
		`{"id":"c","created":5,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
		`{"id":"c","created":5,"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
		`[DONE]`,
	} {
		if err := st.Push(&ev, []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	last := ev.At(ev.Len() - 1)
	if got := gjson.GetBytes(last, "response").Raw; got != string(want) {
		t.Fatalf("streamed\n%s\nJSON\n%s", got, want)
	}
	if gjson.GetBytes(want, "instructions").Str != "hi" || gjson.GetBytes(want, "max_output_tokens").Int() != 5 {
		t.Fatalf("echo missing: %s", want)
	}
}
