// Package convtest is the conformance suite every conversation.Store of
// the examples passes, with the record and assertion helpers their own
// tests share.
package convtest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
)

// Record returns a record of key and id shaped like the relay's, with
// bytes a text column or a JSON round trip would change: escapes, a raw
// NUL, invalid UTF-8, space that JSON compaction would drop.
func Record(key, id string) []byte {
	return []byte(`{"response_id":"` + id + `","api_key_id":"` + key + `","previous_response_id":"resp_prev",` +
		`"model":"gpt-5","account_id":"acct-1","store":true,` +
		`"input":[{"role":"user","content":"héllo \u0000 \"x\""}], "output":[ {"type":"reasoning","encrypted_content":"gAAA=="} ],` +
		`"created_at":"2026-03-04T05:06:07.000008+01:00"}` + "\x00\xff ")
}

// Put stores rec under (key, id) or fails the test.
func Put(tb testing.TB, s conversation.Store, key, id string, rec []byte) {
	tb.Helper()
	if err := s.Put(context.Background(), key, id, rec); err != nil {
		tb.Fatal(err)
	}
}

// MustGet fails unless (key, id) holds exactly want.
func MustGet(tb testing.TB, s conversation.Store, key, id string, want []byte) {
	tb.Helper()
	got, err := s.Get(context.Background(), key, id)
	if err != nil {
		tb.Fatalf("Get(%s, %s): %v", key, id, err)
	}
	if !bytes.Equal(got, want) {
		tb.Fatalf("Get(%s, %s) =\n%q\nwant\n%q", key, id, got, want)
	}
}

// MustMiss fails unless Get of (key, id) says ErrNotFound with no bytes.
func MustMiss(tb testing.TB, s conversation.Store, key, id string) {
	tb.Helper()
	got, err := s.Get(context.Background(), key, id)
	if !errors.Is(err, conversation.ErrNotFound) || got != nil {
		tb.Fatalf("Get(%.20q, %.20q) = %q, %v; want ErrNotFound", key, id, got, err)
	}
}

// MustDelete deletes (key, id) or fails the test.
func MustDelete(tb testing.TB, s conversation.Store, key, id string) {
	tb.Helper()
	if err := s.Delete(context.Background(), key, id); err != nil {
		tb.Fatalf("Delete(%.20q, %.20q): %v", key, id, err)
	}
}
