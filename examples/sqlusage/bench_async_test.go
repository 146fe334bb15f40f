package sqlusage_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/internal/cputime"
)

// BenchmarkSQLiteAsync delivers records from parallel callers through
// billing.Async to SQLite, as relayd does: record by record to 128
// workers waiting on Record's batches (each held up to 20 ms), or in
// batches the Async gathers (up to 20 ms) and hands to RecordBatch, with
// 2 workers. The time includes the drain by Close; cpu-ns/op is the
// process's CPU time per record.
func BenchmarkSQLiteAsync(b *testing.B) {
	const wait = 20 * time.Millisecond
	b.Run("record/workers=128", func(b *testing.B) {
		s := sqliteTarget(b).open(b, sqlusage.WithMaxDelay(wait))
		benchAsync(b, s, billing.SinkFunc(s.Record), billing.DeliveryOptions{Workers: 128})
	})
	b.Run("batch/workers=2", func(b *testing.B) {
		s := sqliteTarget(b).open(b)
		benchAsync(b, s, s, billing.DeliveryOptions{Workers: 2, BatchWait: wait})
	})
}

func benchAsync(b *testing.B, s *sqlusage.Sink, sink billing.UsageSink, o billing.DeliveryOptions) {
	a := billing.NewAsync(sink, o)
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	cpu0 := cputime.Process()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		u := sample("")
		for pb.Next() {
			u.RequestID = "bench_" + strconv.FormatInt(seq.Add(1), 10)
			if err := a.Record(ctx, u); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := a.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cputime.Process() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)/float64(max(sqlusage.Writes(s), 1)), "records/txn")
}
