package chat

import (
	"crypto/rand"
	"encoding/hex"
)

// IDs makes the relay's own ids: prefix ("resp_", "msg_", "fc_", "rs_",
// "call_") followed by a unique suffix. A nil IDs means RandomID. Tests pass
// a counter so that outputs are deterministic.
type IDs func(prefix string) string

// RandomID returns prefix followed by 32 hex digits from crypto/rand, the
// shape the Responses API uses for its own ids.
func RandomID(prefix string) string {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	b := make([]byte, len(prefix)+32)
	copy(b, prefix)
	hex.Encode(b[len(prefix):], raw[:])
	return string(b)
}

func (f IDs) make(prefix string) string {
	if f == nil {
		return RandomID(prefix)
	}
	return f(prefix)
}
