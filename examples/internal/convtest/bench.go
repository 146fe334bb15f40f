package convtest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
)

// benchRecord is a record of about 4 KiB (a typical turn).
var benchRecord = []byte(`{"response_id":"resp_1","api_key_id":"k","input":[{"role":"user","content":"` +
	strings.Repeat("x", 3800) + `"}],"output":[]}`)

// BenchPut stores records of about 4 KiB in s, cycling through ids
// distinct ids (every one new when ids is 0).
func BenchPut(b *testing.B, s conversation.Store, ids int) {
	ctx := context.Background()
	b.SetBytes(int64(len(benchRecord)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := i
		if ids > 0 {
			n = i % ids
		}
		if err := s.Put(ctx, "k", "resp_"+strconv.Itoa(n), benchRecord); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchGet reads one of 1000 stored records of about 4 KiB from s.
func BenchGet(b *testing.B, s conversation.Store) {
	ctx := context.Background()
	for i := range 1000 {
		if err := s.Put(ctx, "k", "resp_"+strconv.Itoa(i), benchRecord); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "k", "resp_"+strconv.Itoa(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
