package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// escaped writes key in JSON-escaped spellings: \u002d, the first two
// characters escaped in mixed case, every character escaped, \/.
func escaped(key string) string {
	var every strings.Builder
	for i, c := range key {
		if i%2 == 0 {
			fmt.Fprintf(&every, `\u%04X`, c)
		} else {
			fmt.Fprintf(&every, `\u%04x`, c)
		}
	}
	return strings.Join([]string{
		strings.ReplaceAll(key, "-", `\u002d`),
		fmt.Sprintf(`\u%04x\u%04X`, key[0], key[1]) + strings.ReplaceAll(key[2:], "-", `\u002D`),
		every.String(),
		strings.ReplaceAll(key, "/", `\/`),
		`\n` + key,
	}, " or ")
}

// failedAfterOutput is a WebSocket upstream whose turn fails after output
// with an error event (the last of its turn) or a response.failed quoting
// the key in escaped spellings.
func failedAfterOutput(t *testing.T, key string, errorEvent bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
		frames := []string{
			`{"type":"response.created","sequence_number":0,"response":{"id":"resp_esc","status":"in_progress","usage":null}}`,
			`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}`,
			`{"type":"response.failed","sequence_number":2,"response":{"id":"resp_esc","status":"failed","error":{"code":"server_error","message":"key ` + escaped(key) + ` rejected"},"usage":{"input_tokens":1,"output_tokens":1,"total_tokens":2}}}`,
		}
		if errorEvent {
			frames[2] = `{"type":"error","sequence_number":2,"error":{"type":"server_error","code":"bad_key","message":"key ` + escaped(key) + ` rejected"}}`
		}
		for _, f := range frames {
			if c.Write(ctx, websocket.MessageText, []byte(f)) != nil {
				return
			}
		}
		c.Read(ctx) // until the relay closes or sends the next turn
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSecretsEscapedWS: keys quoted with JSON escapes in upstream error
// frames (a refusal with a status), error and failed events after output,
// and the HTTP bridge's error bodies never reach a client's decoded frames,
// close reasons or the logs.
func TestSecretsEscapedWS(t *testing.T) {
	e := newWSEnv(t, true)
	e.rh.MaxAccountSwitches = -1
	key := func(id string) string {
		if strings.HasSuffix(id, "slash") {
			return "eyJWSESC" + id + "/p0O9i8U7/y6T5r4"
		}
		return "sk-proj-WSESC" + id + "-m3N4b5V6c7X8z9"
	}
	frame := func(id string, status int) string {
		return fmt.Sprintf(`{"type":"error","status":%d,"error":{"type":"invalid_request_error","code":"bad_key","message":"key %s rejected","param":null}}`, status, escaped(key(id)))
	}
	bridged := func(id string) string {
		return `{"error":{"type":"invalid_request_error","code":"bad_key","message":"key ` + escaped(key(id)) + ` rejected","param":null}}`
	}
	var ids []string
	add := func(id string, ws bool, base string, set func(id string)) {
		e.addAccount(&scheduler.Account{ID: id, WebSocket: ws, BaseURL: base, Models: []string{"m-" + id}})
		e.keys[id] = key(id)
		ids = append(ids, id)
		if set != nil {
			set(id)
		}
	}
	for _, kind := range []string{"sk", "slash"} {
		add("frame400"+kind, true, "", func(id string) { e.up.SetDefault(id, relaytest.Step{Status: 400, Body: frame(id, 400)}) })
		add("frame429"+kind, true, "", func(id string) { e.up.SetDefault(id, relaytest.Step{Status: 429, Body: frame(id, 429)}) })
		add("bridge400"+kind, false, "", func(id string) { e.up.SetDefault(id, relaytest.Step{Status: 400, Body: bridged(id)}) })
		add("after"+kind, true, failedAfterOutput(t, key("after"+kind), kind == "sk").URL+"/v1", nil)
	}
	var seen strings.Builder
	run := func() {
		for _, id := range ids {
			e.sched.Recover(id)
			c := e.dial()
			c.send(`{"type":"response.create","model":"m-` + id + `","input":"hi"}`)
			for _, f := range c.recvTurn() {
				seen.WriteString(f + "\n" + relaytestenv.DecodedText([]byte(f)))
			}
			c.ws.Close(websocket.StatusNormalClosure, "")
		}
	}
	run()
	e.rh.MapError = relaytestenv.PassUpstreamErrors
	run()
	out := seen.String() + e.logs.String()
	for _, id := range ids {
		k := key(id)
		for _, part := range []string{k, k[len(k)-8:], "WSESC" + id} {
			if i := strings.Index(out, part); i >= 0 {
				t.Fatalf("%q leaked:\n...%s...", part, out[max(0, i-300):min(len(out), i+200)])
			}
		}
	}
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "[redacted]") {
		t.Fatalf("the upstream errors never reached the client masked:\n%s", out)
	}
}
