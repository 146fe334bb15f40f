package scheduler

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A 429's reset headers fall in two groups:
//
//   - Exhaustion signals say the account cannot serve until then:
//     Retry-After-Ms, Retry-After, "try again in X" in the body, a codex
//     window whose used percent is >= 100, and x-ratelimit-reset-X when
//     x-ratelimit-remaining-X is 0.
//   - Window hints: x-ratelimit-reset-X with no remaining-X header. The
//     account may or may not be blocked by that window.
//
// The cooldown is the latest exhaustion signal, because waiting less than
// any exhausted window only earns another 429. Without one it is the
// earliest window hint (the first moment the account may work again). A
// reset with remaining > 0 or used < 100 % is window information, not a ban,
// and is ignored.

// rateLimitReset returns how long a 429 benches the account and which header
// said so. ok is false when no header gave a usable reset.
func rateLimitReset(h http.Header, body []byte, now time.Time) (d time.Duration, source string, ok bool) {
	var (
		ban       time.Duration
		banSource string
		hint      time.Duration
		hintSrc   string
	)
	addBan := func(v time.Duration, src string) {
		if v > ban {
			ban, banSource = v, src
		}
	}
	addHint := func(v time.Duration, src string) {
		if v > 0 && (hint == 0 || v < hint) {
			hint, hintSrc = v, src
		}
	}

	if v, ok := parseSeconds(h.Get("Retry-After-Ms"), time.Millisecond); ok {
		addBan(v, "Retry-After-Ms")
	}
	if v := h.Get("Retry-After"); v != "" {
		if d, ok := parseSeconds(v, time.Second); ok {
			addBan(d, "Retry-After")
		} else if t, err := http.ParseTime(v); err == nil {
			addBan(t.Sub(now), "Retry-After")
		}
	}
	if v, ok := tryAgainIn(body); ok {
		addBan(v, "body")
	}
	for _, w := range [...]string{"primary", "secondary"} {
		used, ok := parseFloat(h.Get("X-Codex-" + w + "-Used-Percent"))
		if !ok || used < 100 {
			continue
		}
		if v, ok := parseSeconds(h.Get("X-Codex-"+w+"-Reset-After-Seconds"), time.Second); ok {
			addBan(v, "x-codex-"+w+"-reset-after-seconds")
		}
	}
	for _, w := range [...]string{"requests", "tokens"} {
		v, ok := parseReset(h.Get("X-Ratelimit-Reset-" + w))
		if !ok {
			continue
		}
		src := "x-ratelimit-reset-" + w
		rem := h.Get("X-Ratelimit-Remaining-" + w)
		if rem == "" {
			addHint(v, src)
			continue
		}
		if n, ok := parseFloat(rem); ok && n <= 0 {
			addBan(v, src)
		}
	}

	switch {
	case ban > 0:
		return ban, banSource, true
	case hint > 0:
		return hint, hintSrc, true
	}
	return 0, "", false
}

// parseSeconds parses a non-negative decimal count of unit ("7", "1.5").
// Zero counts as unknown: a 429 that says "retry now" still gets a backoff.
func parseSeconds(s string, unit time.Duration) (time.Duration, bool) {
	f, ok := parseFloat(s)
	if !ok || f <= 0 || f > float64(1<<62)/float64(unit) {
		return 0, false
	}
	return time.Duration(f * float64(unit)), true
}

func parseFloat(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f { // NaN
		return 0, false
	}
	return f, true
}

// parseReset reads an x-ratelimit-reset-* value: a Go duration ("6m0s",
// "12ms"), or plain seconds as some compatible upstreams send.
func parseReset(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, d > 0
	}
	return parseSeconds(s, time.Second)
}

// tryAgainIn finds "try again in 1.2s" in an error body; OpenAI puts the
// reset there when it sends no Retry-After.
func tryAgainIn(body []byte) (time.Duration, bool) {
	const marker = "try again in "
	i := bytes.Index(body, []byte(marker))
	if i < 0 {
		return 0, false
	}
	rest := body[i+len(marker):]
	n := 0
	for n < len(rest) && n < 32 && (rest[n] == '.' || rest[n] >= '0' && rest[n] <= '9' || rest[n] >= 'a' && rest[n] <= 'z') {
		n++
	}
	// The sentence's own full stop is not part of the duration.
	d, err := time.ParseDuration(strings.TrimRight(string(rest[:n]), "."))
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}

// isHTML reports whether an error body is a web page (a proxy's or CDN's
// block page) rather than the upstream API's JSON.
func isHTML(body []byte) bool {
	t := bytes.TrimLeft(body, " \t\r\n\ufeff")
	if len(t) > 0 && t[0] == '<' {
		return true
	}
	if len(t) > 4096 {
		t = t[:4096]
	}
	return bytes.Contains(bytes.ToLower(t), []byte("<html"))
}
