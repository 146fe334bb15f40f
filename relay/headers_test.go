package relay_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// TestRequestHeaderHygiene: the upstream sees the pool account's
// credentials and the allowlisted client headers, nothing else.
func TestRequestHeaderHygiene(t *testing.T) {
	e := newEnv(t)
	e.addAccount(&scheduler.Account{ID: "a", Header: http.Header{"Chatgpt-Account-Id": {"acct-123"}}})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(textReq))
	h := req.Header
	h.Set("Authorization", "Bearer rk-client")
	h.Set("Api-Key", "rk-client-other")
	h.Set("X-Api-Key", "rk-client-other")
	h.Set("Cookie", "session=secret")
	h.Set("X-Forwarded-For", "10.0.0.1")
	h.Set("X-Forwarded-Host", "evil")
	h.Set("Originator", "codex_cli_rs")
	h.Set("OpenAI-Beta", "responses=v1")
	h.Set("X-Codex-Turn-Metadata", `{"turn":1}`)
	h["session_id"] = []string{"sess-1"}
	h.Set("User-Agent", "codex_cli_rs/1.0")
	h.Set("X-Custom", "drop-me")
	h.Add("Connection", "X-Custom")
	h.Add("Connection", "Originator")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := e.up.Requests()
	if len(got) != 1 {
		t.Fatalf("%d requests", len(got))
	}
	up := got[0].Header
	if a := up.Get("Authorization"); a != "Bearer "+e.keys["a"] {
		t.Fatalf("upstream Authorization %q", a)
	}
	for _, k := range []string{"Api-Key", "X-Api-Key", "Cookie", "X-Forwarded-For", "X-Forwarded-Host", "X-Custom", "Originator"} {
		if v := up.Get(k); v != "" {
			t.Fatalf("%s crossed to the upstream: %q", k, v)
		}
	}
	for k, v := range map[string]string{"Openai-Beta": "responses=v1", "X-Codex-Turn-Metadata": `{"turn":1}`, "User-Agent": "codex_cli_rs/1.0", "Chatgpt-Account-Id": "acct-123"} {
		if got := up.Get(k); got != v {
			t.Fatalf("%s = %q, want %q", k, got, v)
		}
	}
	if up.Get("Session_id") != "sess-1" {
		t.Fatalf("session_id not forwarded: %v", up)
	}
	for _, v := range up {
		for _, s := range v {
			if strings.Contains(s, "rk-client") {
				t.Fatalf("a client key reached the upstream: %v", up)
			}
		}
	}
}

// TestResponseHeaderHygiene: the client gets the request id and allowlisted
// headers, never cookies or the pool account's limits.
func TestResponseHeaderHygiene(t *testing.T) {
	e := newEnv(t, "a")
	hdr := http.Header{"Set-Cookie": {"upstream=1"}, "X-Ratelimit-Remaining-Requests": {"3"}, "Openai-Organization": {"org-pool"}, "Openai-Processing-Ms": {"12"}}
	for _, body := range []string{textReq, streamReq} {
		e.up.Script("a", relaytest.Step{Header: hdr})
		r := e.do(body)
		for _, k := range []string{"Set-Cookie", "X-Ratelimit-Remaining-Requests", "Openai-Organization"} {
			if v := r.header.Get(k); v != "" {
				t.Fatalf("%s reached the client: %q", k, v)
			}
		}
		if r.header.Get("Openai-Processing-Ms") != "12" || r.header.Get("X-Request-Id") == "" {
			t.Fatalf("allowlisted headers missing: %v", r.header)
		}
	}
	e.h.ReturnHeaders = []string{"X-Ratelimit-Remaining-Requests", "Set-Cookie"}
	e.up.Script("a", relaytest.Step{Header: hdr})
	r := e.do(textReq)
	if r.header.Get("X-Ratelimit-Remaining-Requests") != "3" || r.header.Get("Set-Cookie") != "" {
		t.Fatalf("opt-in headers: %v", r.header)
	}
}

// TestSecretsSanitized: upstream error bodies that echo keys are masked
// for the client, and no key reaches the logs.
func TestSecretsSanitized(t *testing.T) {
	e := newEnv(t, "a")
	e.up.SetKey("a", "sk-proj-realkey-abcdef0123456789")
	e.keys["a"] = "sk-proj-wrongkey-abcdef0123456789"
	e.h.MaxAccountSwitches = -1
	r := e.do(textReq)
	if r.status != 502 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	e.up.SetKey("a", "")
	e.sched.Recover("a") // the 401 benched it
	e.up.Script("a", relaytest.Step{Status: 400, Body: `{"error":{"message":"bad key sk-proj-wrongkey-abcdef0123456789 and sk-live-zzzzzzzz","type":"invalid_request_error","param":null,"code":null}}`})
	r = e.do(textReq)
	if r.status != 400 {
		t.Fatalf("status %d", r.status)
	}
	_, msg, _, _ := apiErr(t, r.body)
	if strings.Contains(msg, "wrongkey") || strings.Contains(msg, "zzzzzzzz") || !strings.Contains(msg, "bad key") {
		t.Fatalf("not sanitized: %q", msg)
	}
	logs := e.logs.String()
	for _, secret := range []string{"wrongkey", "realkey", "rk-client", "zzzzzzzz"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("%s in logs:\n%s", secret, logs)
		}
	}
}

// TestRequestHopByHop: headers named in any of several Connection headers
// and hop-by-hop headers never reach the upstream, nor do credential and
// forwarding headers even when the host lists them in ForwardHeaders; the
// injected Authorization survives a client's "Connection: Authorization".
func TestRequestHopByHop(t *testing.T) {
	e := newEnv(t, "a")
	e.h.ForwardHeaders = []string{"Te", "Keep-Alive", "Proxy-Authorization", "Upgrade", "Cookie", "Api-Key", "X-Api-Key",
		"X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip", "Authorization", "X-Extra", "X-Dropped"}
	for _, body := range []string{textReq, streamReq} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/responses", strings.NewReader(body))
		h := req.Header
		h.Set("Authorization", "Bearer rk-client")
		h.Add("Connection", "keep-alive, X-Codex-Turn-State")
		h.Add("Connection", "Openai-Beta,X-Dropped")
		h.Add("Connection", "Authorization")
		h.Set("X-Codex-Turn-State", "state-1")
		h.Set("Openai-Beta", "responses=v1")
		h.Set("X-Dropped", "1")
		h.Set("X-Extra", "kept")
		h.Set("Originator", "codex_cli_rs")
		h.Set("Te", "trailers")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authorization", "Basic cGFzcw==")
		h.Set("Cookie", "sid=secret")
		h.Set("Api-Key", "rk-client-api")
		h.Set("X-Api-Key", "rk-client-x")
		h.Set("X-Forwarded-For", "10.0.0.1")
		h.Set("X-Forwarded-Proto", "http")
		h.Set("Forwarded", "for=10.0.0.1")
		h.Set("X-Real-Ip", "10.0.0.1")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, got := range e.up.Requests() {
		up := got.Header
		if a := up.Get("Authorization"); a != "Bearer "+e.keys["a"] {
			t.Fatalf("upstream Authorization %q", a)
		}
		for _, k := range []string{"X-Codex-Turn-State", "Openai-Beta", "X-Dropped", "Te", "Keep-Alive", "Proxy-Authorization", "Cookie",
			"Api-Key", "X-Api-Key", "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"} {
			if v := up.Values(k); len(v) > 0 {
				t.Fatalf("%s crossed to the upstream: %q", k, v)
			}
		}
		if up.Get("X-Extra") != "kept" || up.Get("Originator") != "codex_cli_rs" {
			t.Fatalf("allowed headers missing: %v", up)
		}
		for _, c := range up.Values("Connection") {
			if strings.Contains(strings.ToLower(c), "authorization") || strings.Contains(strings.ToLower(c), "openai-beta") {
				t.Fatalf("the client's Connection header crossed: %q", c)
			}
		}
	}
}

// TestResponseHopByHop: upstream hop-by-hop headers, headers the upstream
// names in Connection, cookies and credential headers never reach the
// client, even when the host lists them in ReturnHeaders.
func TestResponseHopByHop(t *testing.T) {
	e := newEnv(t)
	hdr := http.Header{
		"Connection":         {"X-Request-Id, X-Named"},
		"X-Request-Id":       {"req_named"},
		"X-Named":            {"1"},
		"Keep-Alive":         {"timeout=5"},
		"Set-Cookie":         {"upstream=1"},
		"Set-Cookie2":        {"upstream=2"},
		"Authorization":      {"Bearer sk-echoed-0123456789"},
		"Www-Authenticate":   {"Bearer realm=pool"},
		"Proxy-Authenticate": {"Basic"},
		"X-Custom":           {"passed"},
	}
	e.addRawAccountHeader("raw", 0, hdr, sseFrame("response.created", rawCreated)+sseFrame("response.output_text.delta", rawDelta)+
		sseFrame("response.completed", rawCompleted))
	e.h.ReturnHeaders = []string{"X-Request-Id", "X-Named", "Keep-Alive", "Set-Cookie", "Set-Cookie2", "Authorization",
		"Www-Authenticate", "Proxy-Authenticate", "Connection", "X-Custom"}
	r := e.do(streamReq)
	if r.lastType() != "response.completed" {
		t.Fatalf("events %v", r.types())
	}
	for _, k := range []string{"X-Request-Id", "X-Named", "Keep-Alive", "Set-Cookie", "Set-Cookie2", "Authorization", "Www-Authenticate", "Proxy-Authenticate"} {
		if v := r.header.Values(k); len(v) > 0 {
			t.Fatalf("%s reached the client: %q", k, v)
		}
	}
	if r.header.Get("X-Custom") != "passed" {
		t.Fatalf("opted-in header missing: %v", r.header)
	}
}
