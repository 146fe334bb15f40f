package billing_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

var _ billing.UsageSink = (*billing.Spool)(nil)

// fastSpool keeps the retry waits of a test in the millisecond range and
// its logs out of the output unless a test asks for them.
func fastSpool(o billing.DeliveryOptions) billing.DeliveryOptions {
	if o.RetryBase == 0 {
		o.RetryBase = time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 2 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func openSpool(t *testing.T, dir string, next billing.UsageSink, o billing.DeliveryOptions) *billing.Spool {
	t.Helper()
	s, err := billing.OpenSpool(dir, next, fastSpool(o))
	if err != nil {
		t.Fatalf("OpenSpool: %v", err)
	}
	return s
}

func closeSpool(t *testing.T, s *billing.Spool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func recordAll(t *testing.T, s *billing.Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Record(context.Background(), record(i)); err != nil {
			t.Fatalf("Record(%d): %v", i, err)
		}
	}
}

func waitPending(t *testing.T, s *billing.Spool, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := billing.WaitSpoolPending(ctx, s, n); err != nil {
		t.Fatalf("waiting for %d pending records (now %d): %v", n, s.Pending(), err)
	}
}

// hung fails every delivery once its context ends, which is only at Close
// or a crash: a database that never answers.
var hung = billing.SinkFunc(func(ctx context.Context, _ billing.Usage) error {
	<-ctx.Done()
	return ctx.Err()
})

// idempotent stores each RequestID once and counts every delivery, as an
// INSERT ... ON CONFLICT DO NOTHING table would.
type idempotent struct {
	mu    sync.Mutex
	rows  map[string]billing.Usage
	calls map[string]int
}

func newIdempotent() *idempotent {
	return &idempotent{rows: map[string]billing.Usage{}, calls: map[string]int{}}
}

func (d *idempotent) Record(_ context.Context, u billing.Usage) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[u.RequestID]++
	if _, ok := d.rows[u.RequestID]; !ok {
		d.rows[u.RequestID] = u
	}
	return nil
}

func (d *idempotent) ids() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id := range d.rows {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func files(t *testing.T, dir, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestSpoolDeliversEveryRecord(t *testing.T) {
	var store billing.MemorySink
	s := openSpool(t, t.TempDir(), &store, billing.DeliveryOptions{})
	recordAll(t, s, 0, 20)
	closeSpool(t, s)
	if got := requestIDs(store.Records()); !slices.Equal(got, wantIDs(0, 20)) {
		t.Fatalf("delivered %v, want all 20 once", got)
	}
	for _, u := range store.Records() {
		var i int
		fmt.Sscanf(u.RequestID, "req_%d", &i)
		if !reflect.DeepEqual(u, record(i)) {
			t.Fatalf("delivered %+v\nwant %+v", u, record(i))
		}
	}
	if s.Pending() != 0 {
		t.Fatalf("Pending = %d after a drained Close", s.Pending())
	}
}

func TestSpoolConcurrentRecordsShareSyncs(t *testing.T) {
	db := newIdempotent()
	s := openSpool(t, t.TempDir(), db, billing.DeliveryOptions{})
	const goroutines, each = 64, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := s.Record(context.Background(), record(g*each+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	syncs := billing.SpoolSyncs(s)
	closeSpool(t, s)

	const total = goroutines * each
	if got := db.ids(); !slices.Equal(got, slices.Sorted(slices.Values(wantIDs(0, total)))) {
		t.Fatalf("delivered %d distinct records, want %d", len(got), total)
	}
	for id, n := range db.calls {
		if n != 1 {
			t.Fatalf("%s delivered %d times, want once", id, n)
		}
	}
	t.Logf("%d records, %d fsyncs", total, syncs)
	// About one sync per eight records on an idle machine, fewer shared on
	// a loaded one (records arrive more slowly than syncs end); a sync per
	// record is what must not happen. Half is far from both.
	if syncs > total/2 {
		t.Fatalf("%d fsyncs for %d records: concurrent Records do not share syncs", syncs, total)
	}
}

func TestSpoolCloseDeadlineKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	var dropped atomic.Int64
	s := openSpool(t, dir, hung, billing.DeliveryOptions{
		AttemptTimeout: -1,
		OnDropped:      func(billing.Usage, error) { dropped.Add(1) },
	})
	recordAll(t, s, 0, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "5 record(s) undelivered") {
		t.Fatalf("Close = %v, want a deadline error counting 5 undelivered records", err)
	}
	if err2 := s.Close(context.Background()); err2 != err {
		t.Fatalf("second Close = %v, want the first result", err2)
	}
	if n := dropped.Load(); n != 0 {
		t.Fatalf("OnDropped called %d times: the records are still on disk", n)
	}

	var store billing.MemorySink
	s = openSpool(t, dir, &store, billing.DeliveryOptions{})
	closeSpool(t, s)
	if got := requestIDs(store.Records()); !slices.Equal(got, wantIDs(0, 5)) {
		t.Fatalf("delivered after reopen: %v, want all 5", got)
	}
}

func TestSpoolRecordAfterCloseDeliversDirectly(t *testing.T) {
	var store billing.MemorySink
	s := openSpool(t, t.TempDir(), &store, billing.DeliveryOptions{})
	closeSpool(t, s)
	if err := s.Record(context.Background(), record(0)); err != nil {
		t.Fatal(err)
	}
	if len(store.Records()) != 1 {
		t.Fatalf("stored %d records right after Record following Close, want 1", len(store.Records()))
	}

	var dropped atomic.Int64
	s = openSpool(t, t.TempDir(), billing.SinkFunc(func(context.Context, billing.Usage) error {
		return errors.New("db down")
	}), billing.DeliveryOptions{MaxRetries: -1, OnDropped: func(billing.Usage, error) { dropped.Add(1) }})
	closeSpool(t, s)
	if err := s.Record(context.Background(), record(1)); !errors.Is(err, billing.ErrDropped) {
		t.Fatalf("Record after Close with a failing sink = %v, want ErrDropped", err)
	}
	if dropped.Load() != 1 {
		t.Fatalf("OnDropped called %d times, want 1", dropped.Load())
	}
}

func TestOpenSpoolLocksDir(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, discard, billing.DeliveryOptions{})
	if _, err := billing.OpenSpool(dir, discard, billing.DeliveryOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenSpool on the same dir = %v, want an in-use error", err)
	}
	closeSpool(t, s)
	s = openSpool(t, dir, discard, billing.DeliveryOptions{})
	closeSpool(t, s)

	if _, err := billing.OpenSpool(t.TempDir(), nil, billing.DeliveryOptions{}); err == nil {
		t.Fatal("OpenSpool with a nil sink succeeded")
	}
}

func TestOpenSpoolRejectsForeignSegment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", 1)), []byte("not a spool file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := billing.OpenSpool(dir, discard, billing.DeliveryOptions{}); err == nil {
		t.Fatal("OpenSpool took over a file that is not a segment")
	}
}

func BenchmarkSpoolRecord(b *testing.B) {
	for _, bc := range []struct {
		name        string
		parallelism int // goroutines per GOMAXPROCS
		delay       time.Duration
	}{
		{"goroutines=1", 0, 0},
		{"goroutines=64xP", 64, 0},
		{"goroutines=64xP/delay=2ms", 64, 2 * time.Millisecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := billing.OpenSpool(b.TempDir(), discard, billing.DeliveryOptions{
				CommitDelay: bc.delay, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			u := record(1)
			b.ResetTimer()
			if bc.parallelism == 0 {
				for b.Loop() {
					if err := s.Record(context.Background(), u); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(bc.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Record(context.Background(), u); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(b.N)/float64(billing.SpoolSyncs(s)), "records/fsync")
			if err := s.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// discard is a sink that keeps nothing.
var discard = billing.SinkFunc(func(context.Context, billing.Usage) error { return nil })
