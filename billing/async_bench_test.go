package billing_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/cputime"
)

// countSink counts records and calls and stores nothing, so that a
// benchmark measures the delivery alone.
type countSink struct{ records, calls atomic.Int64 }

func (s *countSink) Record(context.Context, billing.Usage) error {
	s.records.Add(1)
	s.calls.Add(1)
	return nil
}

// countBatchSink is a countSink that is also a BatchSink.
type countBatchSink struct{ countSink }

func (s *countBatchSink) RecordBatch(_ context.Context, us []billing.Usage) error {
	s.records.Add(int64(len(us)))
	s.calls.Add(1)
	return nil
}

// newCountSink is a countSink, or a countBatchSink when batch is set,
// and its counts.
func newCountSink(batch bool) (billing.UsageSink, *countSink) {
	if batch {
		s := &countBatchSink{}
		return s, &s.countSink
	}
	s := &countSink{}
	return s, s
}

// BenchmarkAsyncDelivery queues records from parallel callers into an
// Async and delivers them to a sink that stores nothing: record by record
// (a plain sink, with the default 4 workers and with 128 as a SQL sink
// that batches by itself needs), or in batches (a BatchSink). The time
// includes the drain by Close. cpu-ns/op is the process's CPU time (user
// and system) per record: what the wake-ups of the workers cost besides
// the callers' own time.
func BenchmarkAsyncDelivery(b *testing.B) {
	for _, c := range []struct {
		name    string
		batch   bool
		workers int
	}{
		{"record/workers=4", false, 4},
		{"record/workers=128", false, 128},
		{"batch/workers=1", true, 1},
		{"batch/workers=2", true, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			sink, counts := newCountSink(c.batch)
			a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: c.workers})
			ctx := context.Background()
			b.ReportAllocs()
			cpu0 := cputime.Process()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				u := record(1)
				for pb.Next() {
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
			if n := counts.records.Load(); n != int64(b.N) {
				b.Fatalf("delivered %d records, want %d", n, b.N)
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(b.N)/float64(max(counts.calls.Load(), 1)), "records/call")
		})
	}
}

// BenchmarkAsyncDeliveryPaced is one caller with a turn's worth of work
// between records (a 20 µs spin), as a relay at one client: the workers
// are parked when a record comes. delivery-cpu-ns/op is the process's CPU
// time per record less the caller's spin: what queueing and delivering a
// record cost, wake-ups included.
func BenchmarkAsyncDeliveryPaced(b *testing.B) {
	const turn = 20 * time.Microsecond
	for _, c := range []struct {
		name    string
		batch   bool
		workers int
	}{
		{"record/workers=4", false, 4},
		{"record/workers=128", false, 128},
		{"batch/workers=2", true, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			sink, _ := newCountSink(c.batch)
			a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: c.workers})
			ctx := context.Background()
			u := record(1)
			var spun time.Duration
			b.ReportAllocs()
			cpu0 := cputime.Process()
			b.ResetTimer()
			for b.Loop() {
				if err := a.Record(ctx, u); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				for time.Since(start) < turn {
				}
				spun += time.Since(start)
			}
			if err := a.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu := cputime.Process() - cpu0 - spun
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "delivery-cpu-ns/op")
		})
	}
}
