package sqlconversation_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// benchRecord is a record of about 4 KiB (a typical turn).
var benchRecord = []byte(`{"response_id":"resp_1","api_key_id":"k","input":[{"role":"user","content":"` +
	strings.Repeat("x", 3800) + `"}],"output":[]}`)

// benchPut stores records of about 4 KiB with distinct ids, cleanup on.
func benchPut(b *testing.B, tg target) {
	s := tg.open(b, nil)
	ctx := context.Background()
	b.SetBytes(int64(len(benchRecord)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Put(ctx, "k", "resp_"+strconv.Itoa(i), benchRecord); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// benchGet reads one of 1000 stored records of about 4 KiB.
func benchGet(b *testing.B, tg target) {
	s := tg.open(b, nil)
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

func BenchmarkSQLitePut(b *testing.B)   { benchPut(b, sqliteTarget(b)) }
func BenchmarkSQLiteGet(b *testing.B)   { benchGet(b, sqliteTarget(b)) }
func BenchmarkPostgresPut(b *testing.B) { benchPut(b, postgresTarget(b)) }
func BenchmarkPostgresGet(b *testing.B) { benchGet(b, postgresTarget(b)) }
