package relay

import "bytes"

// sanitize masks API-key fragments an upstream error body may echo
// ("Incorrect API key provided: sk-proj-abc...xyz") and any of the given
// secrets, before the body reaches a client or a log line. A key written
// with JSON escapes (sk\u002d..., \/) is a key too, since the client's
// decoder restores it: a body with an escape that can spell a key's
// character takes the escape-aware path (sanitize_escaped.go). The other
// escapes (\n, \", \\ ...) decode to characters no key contains, so the
// bytes as written show every key.
func sanitize(body []byte, secrets ...string) []byte {
	if i := bytes.IndexByte(body, '\\'); i >= 0 && (bytes.Contains(body[i:], []byte(`\u`)) || bytes.Contains(body[i:], []byte(`\/`))) {
		return sanitizeEscaped(body, secrets)
	}
	out := body
	copied := false
	for _, s := range secrets {
		if len(s) >= 6 && bytes.Contains(out, []byte(s)) {
			out = bytes.ReplaceAll(out, []byte(s), []byte("[redacted]"))
			copied = true
		}
	}
	if bytes.Contains(out, []byte("sk-")) || bytes.Contains(out, []byte("rk-")) {
		if !copied {
			out = append([]byte(nil), out...)
		}
		out = maskKeyFragments(out)
	}
	return out
}

// maskKeyFragments replaces each "sk-"/"rk-" token (letters, digits, '-',
// '_', '*', '.') with "sk-***".
func maskKeyFragments(b []byte) []byte {
	var dst []byte
	i := 0
	for i < len(b) {
		j := bytes.Index(b[i:], []byte("k-"))
		if j < 0 {
			break
		}
		k := i + j // index of 'k'
		if k == 0 || (b[k-1] != 's' && b[k-1] != 'r') || keyCharBefore(b, k-1) {
			dst = append(dst, b[i:k+2]...)
			i = k + 2
			continue
		}
		end := k + 2
		for end < len(b) && (isKeyChar(b[end]) || b[end] == '*' || b[end] == '.') {
			end++
		}
		if end-(k+2) < 3 { // too short to be a key: "sk-" in prose
			dst = append(dst, b[i:end]...)
			i = end
			continue
		}
		dst = append(dst, b[i:k-1]...)
		dst = append(dst, b[k-1], 'k', '-', '*', '*', '*')
		i = end
	}
	return append(dst, b[i:]...)
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// keyCharBefore reports that the byte before b[i] continues a word, so
// b[i:] does not start a key ("task-"). The letter of an escape (\nsk-)
// does not: it decodes to a control character.
func keyCharBefore(b []byte, i int) bool {
	return i >= 1 && isKeyChar(b[i-1]) && !(i >= 2 && b[i-2] == '\\')
}
