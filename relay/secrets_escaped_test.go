package relay_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/scheduler"
)

// escapeSpellings writes key in the JSON-escaped spellings a careless
// upstream might use; a JSON decoder turns each back into the key, or (the
// last one) a decoder applied twice, to JSON quoted inside a message.
func escapeSpellings(key string) []string {
	everyChar := func(upper bool) string {
		var b strings.Builder
		for i, c := range key {
			if upper == (i%2 == 0) {
				fmt.Fprintf(&b, `\u%04X`, c)
			} else {
				fmt.Fprintf(&b, `\u%04x`, c)
			}
		}
		return b.String()
	}
	first := key[:1]
	return []string{
		strings.ReplaceAll(key, "-", `\u002d`),
		fmt.Sprintf(`\u%04x`, first[0]) + strings.ReplaceAll(key[1:], "-", `\u002D`),
		everyChar(true),
		everyChar(false),
		strings.ReplaceAll(key, "/", `\/`),
		`\n` + key,
		strings.ReplaceAll(key, "-", `\\u002d`),
		strings.ReplaceAll(key, "/", `\\\/`),
	}
}

// escapeUpstream answers like echoUpstream, quoting the bearer token it got
// in every escaped spelling, in an error body, an in-band refusal, an error
// event and a failed event after output, and a failed JSON answer.
func escapeUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		echo := "key " + strings.Join(escapeSpellings(token), " or ") + " rejected"
		inner := `{\"error\":{\"message\":\"` + strings.ReplaceAll(token, "-", `\\u002d`) + `\"}}` // JSON inside a message
		errJSON := `{"error":{"message":"` + echo + `","type":"invalid_request_error","param":"` + inner + `","code":"` + escapeSpellings(token)[2] + `"}}`
		writeEchoFault(w, faultMode(r), "resp_esc", echo, errJSON, escapeSpellings(token)[1])
	}))
	t.Cleanup(srv.Close)
	return srv
}

var looseEscape = regexp.MustCompile(`\\+(u[0-9a-fA-F]{4}|/)`)

// looseDecode undoes any depth of \uXXXX and \/ escaping, however many
// backslashes precede them: for log lines, whose quoting adds its own.
func looseDecode(s string) string {
	return looseEscape.ReplaceAllStringFunc(s, func(m string) string {
		m = strings.TrimLeft(m, `\`)
		if m == "/" {
			return "/"
		}
		var r rune
		fmt.Sscanf(m[1:], "%04x", &r)
		return string(r)
	})
}

// TestSecretsEscaped: an upstream that quotes an account's key with JSON
// escapes (\u002d, \u0073 in either case, every character escaped, \/,
// after \n, and escaped twice inside quoted JSON) leaks nothing: not in
// JSON error bodies, SSE events, a failed JSON answer, or log lines, as
// the client's decoder reads them.
func TestSecretsEscaped(t *testing.T) {
	e := newEnv(t)
	e.sched.Logger = e.h.Logger
	up := escapeUpstream(t)
	modes := []string{"400", "500", "failed-before", "failed-after", "error-after", "json-failed"}
	var secrets []string
	for _, m := range modes {
		for _, kind := range []string{"sk", "slash"} {
			id := m + "-" + kind
			e.addAccount(&scheduler.Account{ID: id, BaseURL: up.URL + "/" + m + "/v1", Models: []string{"m-" + id}})
			// A key with the sk- shape (pattern and exact masking) and one
			// only its exact value can mask, with slashes.
			e.keys[id] = "sk-proj-ESCCANARY" + strings.ReplaceAll(m, "-", "") + "-x7Qm2Lp9Vt4Zr8Wn"
			if kind == "slash" {
				e.keys[id] = "eyJESCCANARY" + strings.ReplaceAll(m, "-", "") + "/a1b2c3d4/Zz9Yy8Xx7Ww"
			}
			secrets = append(secrets, e.keys[id])
		}
	}
	e.h.MaxAccountSwitches = -1
	var seen strings.Builder
	turn := func(id, stream string) {
		t.Helper()
		r := e.do(`{"model":"m-` + id + `","stream":` + stream + `,"input":"hi"}`)
		seen.WriteString(string(r.body) + "\n" + relaytestenv.DecodedText(r.body))
		for _, ev := range r.events {
			seen.WriteString(relaytestenv.DecodedText(ev.Data))
		}
	}
	for _, id := range e.accts {
		for _, stream := range []string{"false", "true"} {
			turn(id, stream)
		}
	}
	e.h.MapError = relaytestenv.PassUpstreamErrors
	for _, id := range []string{"400-sk", "500-slash", "failed-before-sk", "failed-before-slash"} {
		e.sched.Recover(id)
		turn(id, "true")
	}
	out := seen.String() + e.logs.String()
	out += looseDecode(out)
	for _, p := range canaryParts(secrets...) {
		if i := strings.Index(out, p); i >= 0 {
			t.Fatalf("secret part %q leaked:\n...%s...", p, out[max(0, i-300):min(len(out), i+200)])
		}
	}
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "[redacted]") || !strings.Contains(out, "sk-***") {
		t.Fatalf("the upstream errors did not reach the client masked:\n%s", out)
	}
}
