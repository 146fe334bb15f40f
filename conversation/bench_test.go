package conversation_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
)

// benchRecords returns n records of about 4 KiB (a typical turn: a short
// prompt, tool output, an answer), with distinct response ids.
func benchRecords(n int) []*conversation.Record {
	recs := make([]*conversation.Record, n)
	for i := range recs {
		recs[i] = record("key-1", fmt.Sprintf("resp_%08d", i), 3800)
	}
	return recs
}

// BenchmarkMemoryPut measures a Put in steady state: the store is full, so
// each Put also evicts the oldest record.
func BenchmarkMemoryPut(b *testing.B) {
	recs := benchRecords(4096)
	m := &conversation.Memory{MaxBytes: 1024 * recs[0].Size()}
	ctx := context.Background()
	for _, r := range recs {
		m.Put(ctx, r)
	}
	b.SetBytes(recs[0].Size())
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := m.Put(ctx, recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryGet(b *testing.B) {
	recs := benchRecords(4096)
	m := &conversation.Memory{}
	ctx := context.Background()
	for _, r := range recs {
		m.Put(ctx, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := recs[i%len(recs)]
		if _, err := m.Get(ctx, r.APIKeyID, r.ResponseID); err != nil {
			b.Fatal(err)
		}
	}
}
