package relay

import (
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// FuzzParseRequest: any body either validates with a non-empty model or is
// answered with a 400 in OpenAI's shape; it never panics.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`, `{"model":"m","stream":true}`, `{"model":5}`, ``, `[]`, `{"model":"m","previous_response_id":"msg_1"}`,
		`{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}`,
		`{"model":"m","input":[{"type":"function_call","call_id":"c"},{"type":"function_call_output","call_id":"c"}]}`,
		// Nesting past jsonx.MaxDepth, closed or not; brackets in strings;
		// repeated keys the relay reads, plainly and escaped.
		`{"model":"m","input":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
		`{"model":"m","input":` + strings.Repeat(`{"a":`, 600),
		`{"model":"m","input":"` + strings.Repeat("[", 600) + `\"{"}`,
		`{"model":"m","stream":false,"stream":true}`,
		`{"model":"m","mod\u0065l":"n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		q, e := parseRequest(body)
		if (q == nil) == (e == nil) {
			t.Fatalf("request %v and error %v", q, e)
		}
		if jsonx.DepthExceeds(body, 0) {
			if e == nil || e.Message != tooDeep {
				t.Fatalf("a body nested too deep was not refused for it: %v", e)
			}
			return
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
		// Accepted: no key the relay reads appears twice at the top.
		seen := map[string]bool{}
		gjson.ParseBytes(body).ForEach(func(k, _ gjson.Result) bool {
			if routedKey([]byte(k.Str)) >= 0 && seen[k.Str] {
				t.Fatalf("accepted %q with %q twice", body, k.Str)
			}
			seen[k.Str] = true
			return true
		})
	})
}
