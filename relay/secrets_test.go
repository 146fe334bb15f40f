package relay_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Canary credentials: distinctive enough that any copy of them, whole or
// in part, is found in what the relay emits.
const (
	clientCanary = "rk-live-CLIENTCANARY-h3J9kL2mN5pQ"
	wrongCanary  = "rk-live-WRONGCANARY-z8Y7x6W5v4U3"
)

func accountCanary(id string) string { return "sk-proj-CANARY" + id + "-x7Qm2Lp9Vt4Zr8Wn" }

// oauthCanary is a credential without the sk- shape that pattern masking
// knows; only its exact value can be masked.
const oauthCanary = "eyJCANARYOAUTH.a1b2c3d4e5f6g7h8.Zz9Yy8Xx7Ww"

// canaryParts are the substrings that must never appear: each secret, its
// distinctive middle, and its last eight characters.
func canaryParts(secrets ...string) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s, s[len(s)-8:])
		if i := strings.Index(s, "CANARY"); i >= 0 {
			out = append(out, s[i:i+12])
		}
	}
	return out
}

// echoUpstream answers as a careless upstream would: its errors and failed
// events quote the bearer token it received, whole and as a fragment, and
// its headers carry it too. The path's first element picks the fault.
func echoUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		echo := fmt.Sprintf("key %s (%s...%s) rejected", token, token[:6], token[len(token)-4:])
		h := w.Header()
		h.Set("X-Echo-Key", token)
		h.Set("Set-Cookie", "k="+token)
		h.Set("Authorization", "Bearer "+token)
		mode := faultMode(r)
		if mode == "html403" {
			h.Set("Content-Type", "text/html")
			w.WriteHeader(403)
			io.WriteString(w, "<html><body>Blocked: "+echo+"</body></html>")
			return
		}
		errJSON := `{"error":{"message":"` + echo + `","type":"invalid_request_error","param":null,"code":"bad_key"}}`
		writeEchoFault(w, mode, "resp_echo", echo, errJSON, "server_error")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// faultMode is the fault a test upstream plays: the path's first element.
func faultMode(r *http.Request) string {
	mode, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return mode
}

// writeEchoFault plays a fault whose bodies quote echo: an error status
// (mode is the status; the body errJSON), a refusal before any output, a
// failed or error event after output, a failed JSON answer; 404 for a mode
// it does not know. id names the response, failedCode the failed
// events' error code.
func writeEchoFault(w http.ResponseWriter, mode, id, echo, errJSON, failedCode string) {
	created := `{"type":"response.created","sequence_number":0,"response":{"id":"` + id + `","status":"in_progress","usage":null}}`
	failed := `{"type":"response.failed","sequence_number":%d,"response":{"id":"` + id + `","status":"failed","error":{"code":"` + failedCode + `","message":"` + echo + `"},"usage":{"input_tokens":1,"output_tokens":%d,"total_tokens":2}}}`
	h := w.Header()
	if code, err := strconv.Atoi(mode); err == nil {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, errJSON)
		return
	}
	switch mode {
	case "failed-before":
		h.Set("Content-Type", "text/event-stream")
		io.WriteString(w, sseFrame("response.created", created)+sseFrame("response.failed", fmt.Sprintf(failed, 1, 0)))
	case "failed-after":
		h.Set("Content-Type", "text/event-stream")
		io.WriteString(w, sseFrame("response.created", created)+sseFrame("response.output_text.delta", rawDelta)+
			sseFrame("response.failed", fmt.Sprintf(failed, 2, 1)))
	case "error-after":
		h.Set("Content-Type", "text/event-stream")
		io.WriteString(w, sseFrame("response.created", created)+sseFrame("response.output_text.delta", rawDelta)+
			sseFrame("error", `{"type":"error","sequence_number":2,"error":{"type":"server_error","code":"bad_key","message":"`+echo+`"}}`)+
			sseFrame("response.completed", rawCompleted))
	case "json-failed":
		h.Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"`+id+`","object":"response","status":"failed","error":{"code":"server_error","message":"`+echo+`"},"usage":null}`)
	default:
		w.WriteHeader(404)
	}
}

// TestSecretsCanary drives every upstream error path with canary
// credentials and checks every byte the relay emits: response bodies,
// SSE events, headers, and log lines of the relay and the scheduler.
func TestSecretsCanary(t *testing.T) {
	e := newEnv(t)
	e.sched.Logger = e.h.Logger
	e.h.Authenticate = func(r *http.Request) (*relay.Subject, error) {
		if r.Header.Get("Authorization") != "Bearer "+clientCanary {
			return nil, nil
		}
		s := *e.subj
		return &s, nil
	}
	echo := echoUpstream(t)
	modes := []string{"400", "401", "429", "500", "html403", "failed-before", "failed-after", "error-after", "json-failed"}
	var secrets []string
	// Each account serves only its own model name, so that each turn lands
	// on the account under test.
	for _, m := range modes {
		e.addAccount(&scheduler.Account{ID: m, BaseURL: echo.URL + "/" + m + "/v1", Models: []string{"m-" + m}})
		e.keys[m] = accountCanary(strings.ReplaceAll(m, "-", ""))
		secrets = append(secrets, e.keys[m])
	}
	// OAuth-shaped keys (only their exact value can be masked), and a fake
	// account whose key is refused with the real API's fragment echo.
	oauth := []string{"oauth-400", "oauth-failed-before", "oauth-error-after"}
	for i, id := range oauth {
		e.addAccount(&scheduler.Account{ID: id, BaseURL: echo.URL + "/" + strings.TrimPrefix(id, "oauth-") + "/v1", Models: []string{"m-" + id}})
		e.keys[id] = fmt.Sprintf("%s%d", oauthCanary, i)
		secrets = append(secrets, e.keys[id])
	}
	e.addAccount(&scheduler.Account{ID: "fake", Models: []string{"m-fake"}})
	e.keys["fake"] = accountCanary("FAKE")
	e.up.SetKey("fake", "sk-proj-the-right-key-0123456789")
	secrets = append(secrets, e.keys["fake"], clientCanary, wrongCanary)
	parts := canaryParts(secrets...)
	e.h.MaxAccountSwitches = -1 // one account per turn, pinned below

	var seen strings.Builder
	send := func(body, key string, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Cookie", "relay_session="+clientCanary)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&seen, "%d %v\n%s\n", resp.StatusCode, resp.Header, b)
	}
	for _, id := range append(append(modes, oauth...), "fake") {
		for _, stream := range []string{"false", "true"} {
			send(`{"model":"m-`+id+`","stream":`+stream+`,"input":"hi"}`, clientCanary)
		}
	}
	// The same with every error passed through by a host rule.
	e.h.MapError = relaytestenv.PassUpstreamErrors
	for _, id := range []string{"400", "429", "500", "html403", "failed-before", "oauth-400", "oauth-failed-before"} {
		for _, stream := range []string{"false", "true"} {
			e.sched.Recover(id)
			send(`{"model":"m-`+id+`","stream":`+stream+`,"input":"hi"}`, clientCanary)
		}
	}
	// Client-side errors: a wrong key, a bad body, an unknown model.
	send(textReq, wrongCanary)
	send(`{"model":`, clientCanary)
	send(`{"model":"nobody-serves-this","input":"x"}`, clientCanary)

	out := seen.String() + e.logs.String()
	for _, p := range parts {
		if strings.Contains(out, p) {
			i := strings.Index(out, p)
			t.Fatalf("secret part %q leaked:\n...%s...", p, out[max(0, i-200):min(len(out), i+200)])
		}
	}
	// The masked bodies still say what went wrong.
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "[redacted]") && !strings.Contains(out, "sk-***") {
		t.Fatalf("the upstream errors did not reach the client at all:\n%s", out)
	}
	// And nothing of the client's reached an upstream.
	for _, q := range e.up.Requests() {
		for k, vs := range q.Header {
			if strings.Contains(strings.Join(vs, " "), "CLIENTCANARY") {
				t.Fatalf("client secret in upstream header %s", k)
			}
		}
	}
}

// TestSanitizeShapes: the masking rules on the key shapes upstreams echo.
func TestSanitizeShapes(t *testing.T) {
	e := newEnv(t, "a")
	e.h.MaxAccountSwitches = -1
	for _, body := range []string{
		`{"error":{"message":"Incorrect API key provided: sk-proj-abc...wxyz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
		`{"error":{"message":"bad rk-live-0123456789abcdef and sk-ant-api03-ZZZZ_yyyy-xxxx","type":"invalid_request_error","param":null,"code":null}}`,
	} {
		e.up.Script("a", relaytest.Step{Status: 400, Body: body})
		r := e.do(textReq)
		for _, frag := range []string{"abc...wxyz", "0123456789abcdef", "ZZZZ_yyyy"} {
			if strings.Contains(string(r.body), frag) {
				t.Fatalf("%q not masked: %s", frag, r.body)
			}
		}
		if !strings.Contains(string(r.body), "sk-***") && !strings.Contains(string(r.body), "rk-***") {
			t.Fatalf("no mask left a trace: %s", r.body)
		}
	}
}
