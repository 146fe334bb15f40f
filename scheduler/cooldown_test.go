package scheduler

import (
	"net/http"
	"testing"
	"time"
)

func TestRateLimitReset(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name   string
		header http.Header
		body   string
		want   time.Duration
		source string // "" means no reset known
	}{
		{"retry-after seconds", h("Retry-After", "7"), "", 7 * time.Second, "Retry-After"},
		{"retry-after fractional", h("Retry-After", "1.5"), "", 1500 * time.Millisecond, "Retry-After"},
		{"retry-after http date", h("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), "", 90 * time.Second, "Retry-After"},
		{"retry-after date in the past", h("Retry-After", now.Add(-time.Minute).Format(http.TimeFormat)), "", 0, ""},
		{"retry-after zero", h("Retry-After", "0"), "", 0, ""},
		{"retry-after garbage", h("Retry-After", "soon"), "", 0, ""},
		{"retry-after-ms", h("Retry-After-Ms", "250"), "", 250 * time.Millisecond, "Retry-After-Ms"},
		{"retry-after-ms and retry-after take the later", h("Retry-After-Ms", "1200", "Retry-After", "1"), "", 1200 * time.Millisecond, "Retry-After-Ms"},
		{"reset requests exhausted", h("X-Ratelimit-Reset-Requests", "1s", "X-Ratelimit-Remaining-Requests", "0"), "", time.Second, "x-ratelimit-reset-requests"},
		{"reset tokens exhausted", h("X-Ratelimit-Reset-Tokens", "6m0s", "X-Ratelimit-Remaining-Tokens", "0"), "", 6 * time.Minute, "x-ratelimit-reset-tokens"},
		{"reset milliseconds", h("X-Ratelimit-Reset-Requests", "12ms", "X-Ratelimit-Remaining-Requests", "0"), "", 12 * time.Millisecond, "x-ratelimit-reset-requests"},
		{"reset with remaining is window information", h("X-Ratelimit-Reset-Tokens", "6m0s", "X-Ratelimit-Remaining-Tokens", "5000"), "", 0, ""},
		{"only the exhausted window counts",
			h("X-Ratelimit-Reset-Requests", "2s", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Tokens", "6m0s", "X-Ratelimit-Remaining-Tokens", "900"),
			"", 2 * time.Second, "x-ratelimit-reset-requests"},
		{"resets without remaining: earliest", h("X-Ratelimit-Reset-Requests", "20s", "X-Ratelimit-Reset-Tokens", "3s"), "", 3 * time.Second, "x-ratelimit-reset-tokens"},
		{"reset in plain seconds", h("X-Ratelimit-Reset-Requests", "30"), "", 30 * time.Second, "x-ratelimit-reset-requests"},
		{"retry-after beats a window hint", h("Retry-After", "4", "X-Ratelimit-Reset-Tokens", "10m0s"), "", 4 * time.Second, "Retry-After"},
		{"codex primary at 100", h("X-Codex-Primary-Used-Percent", "100", "X-Codex-Primary-Reset-After-Seconds", "1800"), "", 30 * time.Minute, "x-codex-primary-reset-after-seconds"},
		{"codex secondary over 100", h("X-Codex-Secondary-Used-Percent", "100.5", "X-Codex-Secondary-Reset-After-Seconds", "7200"), "", 2 * time.Hour, "x-codex-secondary-reset-after-seconds"},
		{"codex below 100 is not a ban", h("X-Codex-Primary-Used-Percent", "99", "X-Codex-Primary-Reset-After-Seconds", "1800"), "", 0, ""},
		{"codex exhausted window beats a shorter retry-after",
			h("Retry-After", "5", "X-Codex-Primary-Used-Percent", "100", "X-Codex-Primary-Reset-After-Seconds", "600",
				"X-Codex-Secondary-Used-Percent", "40", "X-Codex-Secondary-Reset-After-Seconds", "90000"),
			"", 10 * time.Minute, "x-codex-primary-reset-after-seconds"},
		{"body try again in", nil, `{"error":{"message":"Rate limit reached. Please try again in 1.2s. Visit ...","type":"requests"}}`, 1200 * time.Millisecond, "body"},
		{"body try again in minutes", nil, `Please try again in 6m0s.`, 6 * time.Minute, "body"},
		{"body without a duration", nil, `Please try again in a while`, 0, ""},
		{"nothing", nil, `{"error":{"type":"rate_limit_error"}}`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := tt.header
			if hdr == nil {
				hdr = http.Header{}
			}
			d, src, ok := rateLimitReset(hdr, []byte(tt.body), now)
			if tt.source == "" {
				if ok {
					t.Fatalf("got reset %s from %s, want none", d, src)
				}
				return
			}
			if !ok || d != tt.want || src != tt.source {
				t.Fatalf("got (%s, %q, %v), want (%s, %q, true)", d, src, ok, tt.want, tt.source)
			}
		})
	}
}

func TestIsHTML(t *testing.T) {
	for body, want := range map[string]bool{
		"<!DOCTYPE html><html><body>Access denied</body></html>": true,
		"\n\t  <html>": true,
		"Blocked by proxy: <HTML><BODY>no</BODY>": true,
		`{"error":{"message":"forbidden"}}`:       false,
		"":                                        false,
		"country, region, or territory not supported": false,
	} {
		if got := isHTML([]byte(body)); got != want {
			t.Errorf("isHTML(%q) = %v, want %v", body, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := backoff(5*time.Second, i+1); got != w {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := backoff(5*time.Second, 1000); got != 5*time.Minute {
		t.Errorf("backoff(5*time.Second, 1000) = %s", got)
	}
}
