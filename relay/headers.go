package relay

import (
	"net/http"
	"net/textproto"
	"strings"
)

// forwardRequestHeaders are client headers passed to the upstream. Anything
// else (Authorization, api keys, cookies, X-Forwarded-*, hop-by-hop) stays
// behind: the upstream sees the pool account, not the client.
var forwardRequestHeaders = []string{
	"Content-Type", "Accept", "Accept-Language", "User-Agent", "Openai-Beta",
	"Session_id", "Session-Id", "Conversation_id", "Thread-Id", "Originator",
	"X-Client-Request-Id", "X-Codex-Turn-State", "X-Codex-Turn-Metadata",
	"X-Codex-Window-Id", "X-Codex-Beta-Features",
}

// returnResponseHeaders are upstream headers passed to the client. Rate-limit
// and account headers describe the pool account and stay behind unless the
// host lists them in Handler.ReturnHeaders.
var returnResponseHeaders = []string{
	"X-Request-Id", "Openai-Processing-Ms", "Openai-Version", "X-Codex-Turn-State", "X-Models-Etag",
}

// neverReturn are upstream headers no allowlist can pass: cookies and
// anything naming credentials.
var neverReturn = map[string]bool{"Set-Cookie": true, "Set-Cookie2": true, "Authorization": true, "Www-Authenticate": true, "Proxy-Authenticate": true}

// neverForward are client headers no allowlist can pass: the client's own
// credentials and what a proxy in front of the relay says about it.
var neverForward = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true, "Cookie2": true,
	"Api-Key": true, "X-Api-Key": true, "Forwarded": true, "X-Real-Ip": true}

func forbiddenToForward(key string) bool {
	return neverForward[key] || strings.HasPrefix(key, "X-Forwarded-")
}

// hopByHop headers are per connection (RFC 9110 §7.6.1).
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// copyAllowed copies the headers named in allow (canonical or raw keys)
// from src to dst, except hop-by-hop ones, those listed in src's
// Connection headers, and credentials and forwarding headers.
func copyAllowed(dst, src http.Header, allow []string, extra []string) {
	named := connectionNamed(src)
	copyOne := func(name string) {
		key := textproto.CanonicalMIMEHeaderKey(name)
		if hopByHop[key] || named[key] || forbiddenToForward(key) {
			return
		}
		vs, ok := src[key]
		if !ok {
			vs, ok = src[name] // headers set without canonicalization (session_id)
		}
		if ok && len(vs) > 0 {
			// Shared with the client's request, which nobody modifies
			// while the turn runs; the capped capacity makes any append
			// copy.
			dst[key] = vs[:len(vs):len(vs)]
		}
	}
	for _, name := range allow {
		copyOne(name)
	}
	for _, name := range extra {
		copyOne(name)
	}
}

func connectionNamed(h http.Header) map[string]bool {
	var named map[string]bool
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if named == nil {
					named = make(map[string]bool)
				}
				named[textproto.CanonicalMIMEHeaderKey(f)] = true
			}
		}
	}
	return named
}

// returnHeaders copies the allowed upstream response headers to the client.
func returnHeaders(dst, src http.Header, extra []string) {
	named := connectionNamed(src)
	for _, list := range [][]string{returnResponseHeaders, extra} {
		for _, name := range list {
			key := textproto.CanonicalMIMEHeaderKey(name)
			if hopByHop[key] || named[key] || neverReturn[key] {
				continue
			}
			if vs := src[key]; len(vs) > 0 {
				dst[key] = append([]string(nil), vs...)
			}
		}
	}
}

// headerValue reads a header that clients spell in several ways
// (session_id, session-id) without canonicalizing underscores away.
func headerValue(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
		if vs := h[n]; len(vs) > 0 && vs[0] != "" {
			return vs[0]
		}
	}
	return ""
}
