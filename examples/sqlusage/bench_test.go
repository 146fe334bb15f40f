package sqlusage_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/internal/cputime"
)

// Callers per GOMAXPROCS: enough waiting callers to fill 128-record
// batches, as billing.Async with many workers would be.
const benchParallelism = 64

func BenchmarkSQLiteRecord(b *testing.B) {
	for _, batch := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchRecord(b, sqliteTarget(b), sqlusage.WithMaxBatch(batch))
		})
	}
}

func BenchmarkPostgresRecord(b *testing.B) {
	for _, c := range []struct{ batch, writers int }{{1, 4}, {128, 1}, {128, 4}} {
		b.Run(fmt.Sprintf("batch=%d/writers=%d", c.batch, c.writers), func(b *testing.B) {
			benchRecord(b, postgresTarget(b), sqlusage.WithMaxBatch(c.batch), sqlusage.WithWriters(c.writers))
		})
	}
}

// benchRecord stores b.N distinct records from parallel callers and
// reports records/s and the mean batch size.
func benchRecord(b *testing.B, tg target, opts ...sqlusage.Option) {
	s := tg.open(b, opts...)
	ctx := context.Background()
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		u := sample("")
		for pb.Next() {
			u.RequestID = "bench_" + strconv.FormatInt(seq.Add(1), 10)
			if err := s.Record(ctx, u); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(b.N)/float64(max(sqlusage.Writes(s), 1)), "records/txn")
}

// BenchmarkSQLiteRecordBatch writes batches of n records with
// RecordBatch, one transaction each, from one caller: the cost of a
// batch's statements and commit per record (relayd's queue hands the SQL
// sink batches of what 20 ms gathered: about 10 records at one client).
func BenchmarkSQLiteRecordBatch(b *testing.B) {
	for _, n := range []int{1, 10, 128} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			s := sqliteTarget(b).open(b)
			ctx := context.Background()
			batch := make([]billing.Usage, n)
			seq := 0
			b.ReportAllocs()
			cpu0 := cputime.Process()
			for b.Loop() {
				for i := range batch {
					seq++
					batch[i] = sample("")
					batch[i].RequestID = "bench_" + strconv.Itoa(seq)
				}
				if err := s.RecordBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cputime.Process()-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/record")
		})
	}
}
