package conversation_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/relaykit/responsesrelay/conversation"
)

// benchRecords returns n distinct response ids and, for each, a record of
// about 4 KiB (a typical turn: a short prompt, tool output, an answer).
func benchRecords(n int) ([]string, [][]byte) {
	ids := make([]string, n)
	recs := make([][]byte, n)
	for i := range recs {
		ids[i] = fmt.Sprintf("resp_%08d", i)
		recs[i] = record("key-1", ids[i], 3800)
	}
	return ids, recs
}

// BenchmarkMemoryPut measures a Put in steady state: the store is full, so
// each Put also evicts the oldest record.
func BenchmarkMemoryPut(b *testing.B) {
	ids, recs := benchRecords(4096)
	m := &conversation.Memory{MaxBytes: 1024 * size("key-1", ids[0], recs[0])}
	ctx := context.Background()
	for i, r := range recs {
		m.Put(ctx, "key-1", ids[i], r)
	}
	b.SetBytes(int64(len(recs[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % len(recs)
		if err := m.Put(ctx, "key-1", ids[j], recs[j]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryGet(b *testing.B) {
	ids, recs := benchRecords(4096)
	m := &conversation.Memory{}
	ctx := context.Background()
	for i, r := range recs {
		m.Put(ctx, "key-1", ids[i], r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := m.Get(ctx, "key-1", ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
	}
}
