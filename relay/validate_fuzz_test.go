package relay

import (
	"testing"

	"github.com/tidwall/gjson"
)

// FuzzParseRequest: any body either validates with a non-empty model or is
// answered with a 400 in OpenAI's shape; it never panics.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`, `{"model":"m","stream":true}`, `{"model":5}`, ``, `[]`, `{"model":"m","previous_response_id":"msg_1"}`,
		`{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}`,
		`{"model":"m","input":[{"type":"function_call","call_id":"c"},{"type":"function_call_output","call_id":"c"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		q, e := ParseRequest(body)
		if (q == nil) == (e == nil) {
			t.Fatalf("request %v and error %v", q, e)
		}
		if e != nil {
			if e.Status != 400 || !gjson.ValidBytes(e.JSON()) {
				t.Fatalf("bad error %d %s", e.Status, e.JSON())
			}
			return
		}
		if q.Model == "" || !gjson.ValidBytes(q.Body) {
			t.Fatalf("accepted %q", body)
		}
	})
}
