package headers

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestForward(t *testing.T) {
	src := http.Header{
		"User-Agent":      {"codex/1"},
		"Authorization":   {"Bearer client"},
		"Cookie":          {"a=b"},
		"X-Forwarded-For": {"10.0.0.1"},
		"X-Tenant":        {"t"},
		"X-Named":         {"hop"},
		"Connection":      {"X-Named"},
		"Keep-Alive":      {"timeout=5"},
	}
	src["Session_id"] = []string{"s1"} // as net/http canonicalizes session_id
	dst := http.Header{}
	Forward(dst, src, []string{"X-Tenant", "X-Named", "Authorization", "Cookie", "X-Forwarded-For", "Keep-Alive"})
	if dst.Get("User-Agent") != "codex/1" || dst.Get("X-Tenant") != "t" || dst.Get("Session_id") != "s1" {
		t.Fatalf("allowed headers missing: %v", dst)
	}
	for _, k := range []string{"Authorization", "Cookie", "X-Forwarded-For", "X-Named", "Keep-Alive", "Connection"} {
		if v := dst.Values(k); len(v) > 0 {
			t.Errorf("%s crossed: %q", k, v)
		}
	}
}

func TestReturn(t *testing.T) {
	src := http.Header{"X-Request-Id": {"r1"}, "Set-Cookie": {"s=1"}, "X-Ratelimit-Remaining-Requests": {"9"}, "Www-Authenticate": {"Bearer"}}
	dst := http.Header{}
	Return(dst, src, []string{"Set-Cookie", "Www-Authenticate"})
	if dst.Get("X-Request-Id") != "r1" || dst.Get("Set-Cookie") != "" || dst.Get("Www-Authenticate") != "" || dst.Get("X-Ratelimit-Remaining-Requests") != "" {
		t.Fatalf("returned %v", dst)
	}
	dst = http.Header{}
	Return(dst, src, []string{"X-Ratelimit-Remaining-Requests"})
	if dst.Get("X-Ratelimit-Remaining-Requests") != "9" {
		t.Fatalf("a listed header was not returned: %v", dst)
	}
}

func TestClientIP(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	if got := ClientIP(r); got != "192.0.2.7" {
		t.Fatalf("ClientIP = %q", got)
	}
	r.RemoteAddr = "pipe"
	if got := ClientIP(r); got != "pipe" {
		t.Fatalf("ClientIP without a port = %q", got)
	}
}
