package scheduler

import (
	"net/http"
	"testing"
	"time"
)

// FuzzRateLimitReset: whatever a 429's headers and body say, the cooldown
// parsers never panic, never return a negative or zero duration as usable,
// and name their source exactly when they found one.
func FuzzRateLimitReset(f *testing.F) {
	seeds := [][9]string{
		{"7", "", "", "", "", "", "", "", ""},
		{"Wed, 25 Nov 2026 12:01:30 GMT", "", "", "", "", "", "", "", ""},
		{"", "2500", "", "", "", "", "", "", ""},
		{"", "", "6m0s", "0", "12ms", "", "", "", ""},
		{"", "", "1.5", "", "20s", "0", "", "", ""},
		{"", "", "", "", "", "", "100.0", "300", ""},
		{"", "", "", "", "", "", "99.9", "300", `{"error":{"message":"Please try again in 1.2s."}}`},
		{"-1", "NaN", "-5s", "-1", "9999999999h", "x", "Inf", "1e300", "try again in 3m"},
		{"0", "0", "0s", "0", "0", "0", "0", "0", "try again in ."},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8])
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, retryAfter, retryAfterMs, resetReq, remReq, resetTok, remTok, used, resetAfter, body string) {
		h := http.Header{}
		set := func(k, v string) {
			if v != "" {
				h[k] = []string{v}
			}
		}
		set("Retry-After", retryAfter)
		set("Retry-After-Ms", retryAfterMs)
		set("X-Ratelimit-Reset-Requests", resetReq)
		set("X-Ratelimit-Remaining-Requests", remReq)
		set("X-Ratelimit-Reset-Tokens", resetTok)
		set("X-Ratelimit-Remaining-Tokens", remTok)
		set("X-Codex-Primary-Used-Percent", used)
		set("X-Codex-Primary-Reset-After-Seconds", resetAfter)
		d, src, ok := rateLimitReset(h, []byte(body), now)
		if ok != (d > 0) || ok != (src != "") {
			t.Fatalf("d %v, source %q, ok %v", d, src, ok)
		}
		for _, v := range []string{retryAfter, retryAfterMs, resetReq, resetTok, resetAfter} {
			if d, ok := parseReset(v); ok && d <= 0 {
				t.Fatalf("parseReset(%q) = %v", v, d)
			}
			if d, ok := parseSeconds(v, time.Second); ok && d <= 0 {
				t.Fatalf("parseSeconds(%q) = %v", v, d)
			}
		}
		if d, ok := tryAgainIn([]byte(body)); ok && d <= 0 {
			t.Fatalf("tryAgainIn(%q) = %v", body, d)
		}
	})
}
