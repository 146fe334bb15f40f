package relay

import "net/http"

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
