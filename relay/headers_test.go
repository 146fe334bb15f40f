package relay_test

import (
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
