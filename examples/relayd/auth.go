package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/relaykit/responsesrelay/relay"
)

// Authentication failures. They reach the log at debug level only, never
// the client (which always sees the relay's 401 "Invalid API key").
var (
	errNoKey      = errors.New("no API key in Authorization or x-api-key")
	errUnknownKey = errors.New("unknown API key")
)

// keyring authenticates clients against the configured keys, indexed by
// their SHA-256 digests.
type keyring struct {
	byDigest map[[sha256.Size]byte]*keyEntry
}

type keyEntry struct {
	digest  [sha256.Size]byte
	subject relay.Subject
}

// newKeyring indexes the keys of a validated config.
func newKeyring(keys []APIKeyConfig) (*keyring, error) {
	kr := &keyring{byDigest: make(map[[sha256.Size]byte]*keyEntry, len(keys))}
	ids := make(map[string]int, len(keys))
	for i, k := range keys {
		d := sha256.Sum256([]byte(k.Key))
		id := keyID(d)
		if j, dup := ids[id]; dup {
			return nil, fmt.Errorf("api_keys[%d] and api_keys[%d] share the key id %s; use a longer random key", j, i, id)
		}
		ids[id] = i
		lim, errs := k.limits(fmt.Sprintf("api_keys[%d]", i))
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		kr.byDigest[d] = &keyEntry{digest: d, subject: relay.Subject{
			UserID:      k.UserID,
			APIKeyID:    id,
			GroupID:     k.Group,
			Concurrency: k.Concurrency,
			KeyLimits:   lim,
		}}
	}
	return kr, nil
}

// keyID is the non-secret name of a key in usage records, logs and sticky
// session namespaces: a prefix of its SHA-256, stable across restarts and
// config reordering.
func keyID(d [sha256.Size]byte) string { return "key-" + hex.EncodeToString(d[:6]) }

// authenticate is relay.Handler.Authenticate.
func (kr *keyring) authenticate(r *http.Request) (*relay.Subject, error) {
	key := presentedKey(r.Header)
	if key == "" {
		return nil, errNoKey
	}
	d := sha256.Sum256([]byte(key))
	e, ok := kr.byDigest[d]
	// The map finds the candidate by digest; the final comparison is in
	// constant time so its duration says nothing about the stored digest.
	if !ok || subtle.ConstantTimeCompare(e.digest[:], d[:]) != 1 {
		return nil, errUnknownKey
	}
	s := e.subject // a copy, so that no request can change another's subject
	return &s, nil
}

// presentedKey is the bearer token, or else the x-api-key header.
func presentedKey(h http.Header) string {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(strings.TrimSpace(auth), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			if t := strings.TrimSpace(token); t != "" {
				return t
			}
		}
	}
	return strings.TrimSpace(h.Get("X-Api-Key"))
}
