package billing_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// waitQueued waits until n records read back wait for a worker.
func waitQueued(t *testing.T, s *billing.Spool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for billing.SpoolQueued(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d records queued, want %d", billing.SpoolQueued(s), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockFirst makes a batchSink's first delivery (a lone record, through
// Record) wait for release, so that the records behind it queue up.
func blockFirst(sink *batchSink) (started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	sink.recordHook = func(ctx context.Context, u billing.Usage) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(started)
			<-release
		}
		return nil
	}
	return started, release
}

// TestSpoolDeliversWaitingRecordsInBatches: over a BatchSink, the records
// read back while a delivery ran go to the sink together, in one
// RecordBatch call, and every record is delivered once; the
// acknowledgements hold across a crash.
func TestSpoolDeliversWaitingRecordsInBatches(t *testing.T) {
	dir := t.TempDir()
	sink := &batchSink{}
	started, release := blockFirst(sink)
	s := openSpool(t, dir, sink, billing.DeliveryOptions{Workers: 1})
	recordAll(t, s, 0, 1)
	waitFor(t, started, "the first delivery")
	recordAll(t, s, 1, 16)
	waitQueued(t, s, 15) // 16 in flight per worker: the first and 15 waiting
	close(release)
	recordAll(t, s, 16, 40)
	waitStored(t, sink, 40)
	waitPending(t, s, 0)
	sizes, singles := sink.calls()
	if len(sizes) == 0 || sizes[0] != 15 {
		t.Fatalf("batches %v, want a first one of the 15 records waiting", sizes)
	}
	total := len(singles)
	for _, n := range sizes {
		total += n
	}
	if got := requestIDs(sink.store.Records()); total != 40 || !slices.Equal(got, wantIDs(0, 40)) {
		t.Fatalf("stored %v in batches %v and %d singles, want each of 40 once", got, sizes, len(singles))
	}
	billing.CrashSpool(s)
	again := &batchSink{}
	s = openSpool(t, dir, again, billing.DeliveryOptions{})
	closeSpool(t, s)
	if sizes, singles := again.calls(); len(sizes)+len(singles) != 0 {
		t.Fatalf("after a crash, delivered again: batches %v, singles %v", sizes, singles)
	}
}

// TestSpoolRefusedBatchGoesRecordByRecord: a batch the sink refuses, or
// panics on, is delivered again record by record; a record the sink keeps
// refusing is given up alone after its retries, the others are delivered.
func TestSpoolRefusedBatchGoesRecordByRecord(t *testing.T) {
	for name, hook := range map[string]func(context.Context, []billing.Usage) error{
		"refused":  func(context.Context, []billing.Usage) error { return errors.New("db: batch refused") },
		"panicked": func(context.Context, []billing.Usage) error { panic("sink bug") },
	} {
		t.Run(name, func(t *testing.T) {
			sink := &batchSink{batchHook: hook}
			started, release := blockFirst(sink)
			poisoned := record(7).RequestID
			first := sink.recordHook
			sink.recordHook = func(ctx context.Context, u billing.Usage) error {
				if u.RequestID == poisoned {
					return errors.New("db: bad row")
				}
				return first(ctx, u)
			}
			var mu sync.Mutex
			var dropped []string
			s := openSpool(t, t.TempDir(), sink, billing.DeliveryOptions{Workers: 1, MaxRetries: 2,
				OnDropped: func(u billing.Usage, _ error) { mu.Lock(); dropped = append(dropped, u.RequestID); mu.Unlock() }})
			recordAll(t, s, 0, 1)
			waitFor(t, started, "the first delivery")
			recordAll(t, s, 1, 12)
			waitQueued(t, s, 11)
			close(release)
			waitPending(t, s, 0)
			closeSpool(t, s)
			sizes, _ := sink.calls()
			if len(sizes) == 0 || sizes[0] != 11 {
				t.Fatalf("batches %v, want a first one of 11", sizes)
			}
			want := slices.DeleteFunc(wantIDs(0, 12), func(id string) bool { return id == poisoned })
			if got := requestIDs(sink.store.Records()); !slices.Equal(got, want) {
				t.Fatalf("stored %v, want every record but %s", got, poisoned)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(dropped, []string{poisoned}) {
				t.Fatalf("dropped %v, want only %s", dropped, poisoned)
			}
		})
	}
}

// TestSpoolNoBatchesBelowTwo: MaxBatch < 0 delivers record by record.
func TestSpoolNoBatchesBelowTwo(t *testing.T) {
	sink := &batchSink{}
	s := openSpool(t, t.TempDir(), sink, billing.DeliveryOptions{Workers: 1, MaxBatch: -1})
	recordAll(t, s, 0, 30)
	closeSpool(t, s)
	if sizes, singles := sink.calls(); len(sizes) != 0 || len(singles) != 30 {
		t.Fatalf("batches %v and %d singles, want 30 singles", sizes, len(singles))
	}
}
