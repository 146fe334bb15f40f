package sqlconversation_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// benchPut stores records of about 4 KiB (a typical turn) with distinct
// ids, cleanup on.
func benchPut(b *testing.B, tg target) {
	s := tg.open(b, nil)
	ctx := context.Background()
	r := record("k", "")
	r.Input = json.RawMessage(`[{"role":"user","content":"` + strings.Repeat("x", 3800) + `"}]`)
	b.SetBytes(r.Size())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.ResponseID = "resp_" + strconv.Itoa(i)
		i++
		if err := s.Put(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// benchGet reads one of 1000 stored records of about 4 KiB.
func benchGet(b *testing.B, tg target) {
	s := tg.open(b, nil)
	ctx := context.Background()
	r := record("k", "")
	r.Input = json.RawMessage(`[{"role":"user","content":"` + strings.Repeat("x", 3800) + `"}]`)
	for i := range 1000 {
		r.ResponseID = "resp_" + strconv.Itoa(i)
		if err := s.Put(ctx, r); err != nil {
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
