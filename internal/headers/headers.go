// Package headers is the one header policy of the relay's transports:
// which client headers reach an upstream (HTTP request or WebSocket
// handshake), which upstream headers reach a client, and the client's
// address.
package headers

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"
)

// forwardRequest are client headers passed to the upstream. Anything
// else (Authorization, api keys, cookies, X-Forwarded-*, hop-by-hop) stays
// behind: the upstream sees the pool account, not the client.
var forwardRequest = []string{
	"Content-Type", "Accept", "Accept-Language", "User-Agent", "Openai-Beta",
	"Session_id", "Session-Id", "Conversation_id", "Thread-Id", "Originator",
	"X-Client-Request-Id", "X-Codex-Turn-State", "X-Codex-Turn-Metadata",
	"X-Codex-Window-Id", "X-Codex-Beta-Features",
}

// returnResponse are upstream headers passed to the client. Rate-limit
// and account headers describe the pool account and stay behind unless the
// host lists them in Handler.ReturnHeaders.
var returnResponse = []string{
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

// Forward copies to dst the client headers in src that an upstream request
// may carry: the built-in allowlist and extra (canonical or raw keys),
// except hop-by-hop headers, those src names in Connection, and the
// client's credentials and forwarding headers, whatever extra says. HTTP
// requests and WebSocket handshakes use it alike.
func Forward(dst, src http.Header, extra []string) {
	copyAllowed(dst, src, forwardRequest, extra)
}

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

// Return copies to dst the upstream response headers in src a client may
// see: the built-in allowlist and extra, never cookies, credentials or
// hop-by-hop headers.
func Return(dst, src http.Header, extra []string) {
	named := connectionNamed(src)
	for _, list := range [][]string{returnResponse, extra} {
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

// ClientIP is the peer address of r; hosts behind a proxy that want the
// forwarded address set it through Subject.Meta or their own sink.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
