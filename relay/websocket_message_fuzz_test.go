package relay

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/jsonx"
	"github.com/tidwall/gjson"
)

// FuzzClientMessage: whatever a client sends, the relay either closes the
// connection with 1008 and a short valid reason, or treats the message as
// a turn that is valid (a JSON response.create with a model, sent on as
// is apart from its type) or answered with a well-formed 400 error frame.
// It never panics.
func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"response.create","model":"m","input":"hi"}`,
		`{"model":"m"}`,
		`{"type":null,"model":"m"}`,
		`{"type":"response.append","input":"x"}`,
		`{"type":"session.update"}`,
		`{"type":"` + strings.Repeat("é", 100) + `"}`,
		`{"type":"response.create"}`,
		`{"type":"response.create","model":"m","stream":"yes"}`,
		`{"type":"response.create","model":"m","previous_response_id":"msg_1"}`,
		`{"type":5,"model":"m"}`,
		`[1,2]`, `"text"`, ``, `{`, "\xff\xfe",
		// Nesting past jsonx.MaxDepth, closed or not; brackets in strings;
		// repeated keys the relay reads, plainly and escaped.
		`{"type":"response.create","model":"m","input":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
		`{"type":"response.create","model":"m","input":` + strings.Repeat(`{"a":`, 600),
		`{"type":"response.create","model":"m","input":"` + strings.Repeat("[", 600) + `\"{"}`,
		`{"type":"response.create","model":"m","type":"response.create"}`,
		`{"type":"response.create","model":"m","mod\u0065l":"n"}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"type":"response.create","model":"m"}`), true)
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		code, reason := checkFrame(typ, data)
		if code != 0 {
			if code != websocket.StatusPolicyViolation || reason == "" || len(reason) > 120 || !utf8.ValidString(reason) {
				t.Fatalf("close %d %q", code, reason)
			}
			return
		}
		if binary {
			t.Fatal("a binary frame was accepted")
		}
		req, apiErr := parseTurn(data)
		if (req == nil) == (apiErr == nil) {
			t.Fatalf("request %v and error %v", req, apiErr)
		}
		if jsonx.DepthExceeds(data, 0) && (apiErr == nil || !strings.Contains(apiErr.Message, "nested deeper")) {
			t.Fatalf("a message nested too deep was not refused for it: %v", apiErr)
		}
		if apiErr != nil {
			frame := errorFrame(apiErr)
			if apiErr.Status != 400 || !gjson.ValidBytes(frame) || gjson.GetBytes(frame, "type").Str != "error" ||
				gjson.GetBytes(frame, "status").Int() != 400 || !gjson.GetBytes(frame, "error.message").Exists() {
				t.Fatalf("error frame %s", frame)
			}
			return
		}
		if !gjson.ValidBytes(req.Body) || gjson.GetBytes(req.Body, "type").Str != "response.create" || req.Model == "" ||
			gjson.GetBytes(req.Body, "model").Str != req.Model {
			t.Fatalf("accepted %q as %s", data, req.Body)
		}
	})
}
