package chat

import (
	"testing"

	"github.com/tidwall/gjson"
)

// A client replays a translated answer as the next turn's input: the Chat
// request must rebuild the assistant message the upstream produced, with
// the calls it made under their upstream ids.
func TestRoundTrip(t *testing.T) {
	answer := `{"created":1,"choices":[{"message":{"role":"assistant","reasoning_content":"hmm","content":"Checking.","tool_calls":[
		{"id":"call_a","type":"function","function":{"name":"get","arguments":"{\"c\":1}"}},
		{"id":"call_b","type":"function","function":{"name":"put","arguments":"{}"}}]},"finish_reason":"tool_calls"}],` + chatUsage + `}`
	resp, err := Response([]byte(answer), nil, "gpt-x", nil)
	if err != nil {
		t.Fatal(err)
	}
	input := []byte(`[{"role":"user","content":"go"}`)
	for _, it := range gjson.GetBytes(resp, "output").Array() {
		input = append(append(input, ','), it.Raw...)
	}
	input = append(input, `,{"type":"function_call_output","call_id":"call_a","output":"1"},{"type":"function_call_output","call_id":"call_b","output":"2"}]`...)
	got, err := Request([]byte(`{"model":"gpt-x","input":`+string(input)+`}`), "up")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, `{"model":"up","messages":[
		{"role":"user","content":"go"},
		{"role":"assistant","content":"Checking.","tool_calls":[
			{"id":"call_a","type":"function","function":{"name":"get","arguments":"{\"c\":1}"}},
			{"id":"call_b","type":"function","function":{"name":"put","arguments":"{}"}}]},
		{"role":"tool","tool_call_id":"call_a","content":"1"},
		{"role":"tool","tool_call_id":"call_b","content":"2"}]}`)
}

func TestRandomID(t *testing.T) {
	a, b := RandomID("resp_"), RandomID("resp_")
	if len(a) != len("resp_")+32 || a[:5] != "resp_" || a == b {
		t.Errorf("RandomID: %q %q", a, b)
	}
	for _, c := range a[5:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			t.Fatalf("%q is not hex", a)
		}
	}
}
