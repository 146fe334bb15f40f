package billing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/fastpath"
)

var _ billing.BatchSink = (*batchSink)(nil)

// batchSink is a BatchSink that keeps what it stores and how: the size of
// each RecordBatch call and the ids given to Record. Its hooks, when set,
// decide a call's outcome before anything is stored.
type batchSink struct {
	batchHook  func(ctx context.Context, us []billing.Usage) error
	recordHook func(ctx context.Context, u billing.Usage) error
	called     chan int // when set, gets each RecordBatch call's size

	mu      sync.Mutex
	sizes   []int
	singles []string
	store   billing.MemorySink
}

func (s *batchSink) RecordBatch(ctx context.Context, us []billing.Usage) error {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(us))
	s.mu.Unlock()
	if s.called != nil {
		s.called <- len(us)
	}
	if s.batchHook != nil {
		if err := s.batchHook(ctx, us); err != nil {
			return err
		}
	}
	for _, u := range us {
		s.store.Record(ctx, u)
	}
	return nil
}

func (s *batchSink) Record(ctx context.Context, u billing.Usage) error {
	s.mu.Lock()
	s.singles = append(s.singles, u.RequestID)
	s.mu.Unlock()
	if s.recordHook != nil {
		if err := s.recordHook(ctx, u); err != nil {
			return err
		}
	}
	return s.store.Record(ctx, u)
}

func (s *batchSink) calls() (sizes []int, singles []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sizes), slices.Clone(s.singles)
}

// waitStored waits until s stored n records, failing the test after 10 s.
func waitStored(t *testing.T, s *batchSink, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.store.WaitLen(ctx, n); err != nil {
		got, _ := s.calls()
		t.Fatalf("%d records stored in batches %v, want %d: %v", len(s.store.Records()), got, n, err)
	}
}

// waitFor waits for a signal on c, failing the test after 10 s.
func waitFor[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// A batch ends when MaxBatch records are queued, not on a timer: with an
// hour's BatchWait, each batch's first record sets a worker waiting, and
// the next 15 end its wait with a full batch of 16. None goes through
// Record.
func TestAsyncBatchesFormWhenFull(t *testing.T) {
	sink := &batchSink{}
	a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 2, MaxBatch: 16, BatchWait: time.Hour})
	waiting := make(chan struct{}, 1)
	billing.OnAsyncBatchWait(a, func() { waiting <- struct{}{} })
	for b := range 6 {
		for i := range 16 {
			if err := a.Record(context.Background(), record(b*16+i)); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				waitFor(t, waiting, "a worker waiting for the batch")
			}
		}
	}
	waitStored(t, sink, 96)
	closeWithin(t, a, 5*time.Second)
	sizes, singles := sink.calls()
	if !slices.Equal(sizes, []int{16, 16, 16, 16, 16, 16}) || len(singles) != 0 {
		t.Fatalf("RecordBatch sizes %v and Record calls %v, want six batches of 16 and no Record", sizes, singles)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 96)) {
		t.Fatalf("stored %v, want the 96 records once", got)
	}
}

// Records queued quickly share batches at the default options too, and
// none exceeds MaxBatch.
func TestAsyncBatchesAreBounded(t *testing.T) {
	sink := &batchSink{}
	a := billing.NewAsync(sink, billing.DeliveryOptions{MaxBatch: 50, QueueSize: 1000})
	for i := range 1000 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)
	sizes, singles := sink.calls()
	if len(singles) != 0 {
		t.Fatalf("%d records went through Record", len(singles))
	}
	total := 0
	for _, n := range sizes {
		if n < 1 || n > 50 {
			t.Fatalf("a batch of %d records (sizes %v), want 1 to 50", n, sizes)
		}
		total += n
	}
	if total != 1000 || len(sizes) >= 1000 {
		t.Fatalf("%d records in %d calls, want 1000 in fewer calls", total, len(sizes))
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 1000)) {
		t.Fatalf("stored %d records, want the 1000 once", len(got))
	}
}

// With a negative BatchWait a batch is what is queued when its first
// record is taken: here the nine records queued while the only worker
// delivered the first batch.
func TestAsyncBatchWithoutWait(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sink := &batchSink{batchHook: func(context.Context, []billing.Usage) error {
		once.Do(func() { close(entered); <-release })
		return nil
	}}
	a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 1, BatchWait: -1})
	ctx := context.Background()
	if err := a.Record(ctx, record(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, entered, "the first batch in the sink")
	for i := 1; i < 10; i++ {
		if err := a.Record(ctx, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	waitStored(t, sink, 10)
	closeWithin(t, a, 5*time.Second)
	if sizes, _ := sink.calls(); !slices.Equal(sizes, []int{1, 9}) {
		t.Fatalf("RecordBatch sizes %v, want [1 9]", sizes)
	}
}

// A batch holding a record the sink refuses fails as a whole; after its
// retries its records go one by one, and only the bad one is dropped.
func TestAsyncPoisonedBatchDropsOnlyTheBadRecord(t *testing.T) {
	bad := record(3).RequestID
	refuse := errors.New("db: value too long for column")
	sink := &batchSink{
		batchHook: func(_ context.Context, us []billing.Usage) error {
			for _, u := range us {
				if u.RequestID == bad {
					return refuse
				}
			}
			return nil
		},
		recordHook: func(_ context.Context, u billing.Usage) error {
			if u.RequestID == bad {
				return refuse
			}
			return nil
		},
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	var dropped []billing.Usage
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, MaxBatch: 10, BatchWait: time.Hour, MaxRetries: 2,
		Logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, nil)),
		OnDropped: func(u billing.Usage, err error) {
			if !errors.Is(err, refuse) {
				t.Errorf("OnDropped err = %v, want the sink's refusal", err)
			}
			mu.Lock()
			defer mu.Unlock()
			dropped = append(dropped, u)
		},
	}))
	for i := range 10 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)

	sizes, singles := sink.calls()
	if !slices.Equal(sizes, []int{10, 10, 10}) {
		t.Fatalf("RecordBatch sizes %v, want the batch of 10 tried 3 times (1 + 2 retries)", sizes)
	}
	slices.Sort(singles)
	want := append(wantIDs(0, 10), bad, bad) // the bad one: 1 + 2 retries
	slices.Sort(want)
	if !slices.Equal(singles, want) {
		t.Fatalf("Record calls %v, want each record once and %s three times", singles, bad)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dropped) != 1 || dropped[0].RequestID != bad {
		t.Fatalf("dropped %v, want exactly %s", requestIDs(dropped), bad)
	}
	stored := requestIDs(sink.store.Records())
	if want := slices.DeleteFunc(wantIDs(0, 10), func(id string) bool { return id == bad }); !slices.Equal(stored, want) {
		t.Fatalf("stored %v, want %v", stored, want)
	}
	if !strings.Contains(logs.String(), "usage batch failed; delivering its records one by one") {
		t.Fatalf("no warning for the failed batch:\n%s", logs.String())
	}
}

// A panicking RecordBatch is not tried again: its records go one by one
// at once, and none is lost.
func TestAsyncPanickingBatchFallsBackPerRecord(t *testing.T) {
	sink := &batchSink{batchHook: func(context.Context, []billing.Usage) error { panic("sink bug") }}
	var dropped atomic.Int64
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, MaxBatch: 5, BatchWait: time.Hour,
		Logger:    slog.New(slog.DiscardHandler),
		OnDropped: func(billing.Usage, error) { dropped.Add(1) },
	}))
	for i := range 5 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)
	sizes, singles := sink.calls()
	if !slices.Equal(sizes, []int{5}) {
		t.Fatalf("RecordBatch sizes %v, want one call: a panic is not retried", sizes)
	}
	slices.Sort(singles)
	if !slices.Equal(singles, wantIDs(0, 5)) {
		t.Fatalf("Record calls %v, want each record once", singles)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 5)) || dropped.Load() != 0 {
		t.Fatalf("stored %v, dropped %d; want all 5 stored", got, dropped.Load())
	}
}

// Close ends a batch's wait and delivers the records gathered so far with
// those still queued: with an hour's BatchWait, Close returning at all
// shows the wait was cut short.
func TestAsyncCloseDrainsMidGather(t *testing.T) {
	sink := &batchSink{}
	a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 2, BatchWait: time.Hour})
	waiting := make(chan struct{}, 1)
	billing.OnAsyncBatchWait(a, func() { waiting <- struct{}{} })
	ctx := context.Background()
	if err := a.Record(ctx, record(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waiting, "a worker holding record 0 waiting for more")
	for i := 1; i < 5; i++ {
		if err := a.Record(ctx, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)
	sizes, singles := sink.calls()
	if !slices.Equal(sizes, []int{5}) || len(singles) != 0 {
		t.Fatalf("RecordBatch sizes %v, Record calls %v; want the 5 records in one batch", sizes, singles)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 5)) {
		t.Fatalf("stored %v, want all 5", got)
	}
}

// When Close gives up, the batch in the sink and the records still queued
// all reach OnDropped, and the batch is not delivered again record by
// record.
func TestAsyncBatchCloseDeadlineDropsAll(t *testing.T) {
	sink := &batchSink{
		called: make(chan int, 10),
		batchHook: func(ctx context.Context, _ []billing.Usage) error {
			<-ctx.Done() // hangs until Close gives up
			return ctx.Err()
		},
	}
	droppedc := make(chan billing.Usage, 10)
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, MaxBatch: 4, BatchWait: time.Hour, AttemptTimeout: -1,
		Logger: slog.New(slog.DiscardHandler),
		OnDropped: func(u billing.Usage, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("OnDropped err = %v, want it to carry Close's deadline", err)
			}
			droppedc <- u
		},
	}))
	for i := range 10 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := waitFor(t, sink.called, "the first batch in the sink"); n != 4 {
		t.Fatalf("first batch of %d records, want 4", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
	}
	var dropped []billing.Usage
	for range 10 {
		dropped = append(dropped, <-droppedc)
	}
	if got := requestIDs(dropped); !slices.Equal(got, wantIDs(0, 10)) {
		t.Fatalf("dropped %v, want all 10 once", got)
	}
	if _, singles := sink.calls(); len(singles) != 0 {
		t.Fatalf("Record called for %v after Close gave up", singles)
	}
}

// The relay's fast path queues records without Record; it too ends a
// batch's wait once the batch is full.
func TestAsyncBatchFastPath(t *testing.T) {
	sink := &batchSink{}
	a := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 1, MaxBatch: 4, BatchWait: time.Hour})
	waiting := make(chan struct{}, 1)
	billing.OnAsyncBatchWait(a, func() { waiting <- struct{}{} })
	for i := range 8 {
		u := record(i)
		if !fastpath.EnqueueUsage(a, &u) {
			t.Fatalf("fast path refused record %d", i)
		}
		if i%4 == 0 {
			waitFor(t, waiting, "a worker waiting for the batch")
		}
	}
	waitStored(t, sink, 8)
	closeWithin(t, a, 5*time.Second)
	if sizes, _ := sink.calls(); !slices.Equal(sizes, []int{4, 4}) {
		t.Fatalf("RecordBatch sizes %v, want two full batches", sizes)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 8)) {
		t.Fatalf("stored %v, want all 8", got)
	}
	u := record(8)
	if fastpath.EnqueueUsage(a, &u) {
		t.Fatal("fast path queued a record after Close")
	}
}

// A negative MaxBatch delivers record by record even to a BatchSink.
func TestAsyncNegativeMaxBatchUsesRecord(t *testing.T) {
	sink := &batchSink{}
	a := billing.NewAsync(sink, billing.DeliveryOptions{MaxBatch: -1})
	for i := range 20 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)
	sizes, singles := sink.calls()
	slices.Sort(singles)
	if len(sizes) != 0 || !slices.Equal(singles, wantIDs(0, 20)) {
		t.Fatalf("RecordBatch sizes %v, Record calls %v; want only Record, once each", sizes, singles)
	}
}

// Settling over a BatchSink is one: each record of a batch is settled
// before the batch is passed on, a replayed record settles once, and a
// batch whose Settle fails is not passed on.
func TestSettlingBatch(t *testing.T) {
	var ledger billing.MemoryLedger
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	limits := billing.Limits{BudgetMicros: 10_000_000}
	var us []billing.Usage
	for i := range 3 {
		u := record(i)
		u.CostMicros, u.CreatedAt = int64(100*(i+1)), now
		if _, err := ledger.Hold(ctx, billing.Request{RequestID: u.RequestID, APIKeyID: u.APIKeyID,
			KeyLimits: limits, HoldMicros: 1000, Now: now}); err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	next := &batchSink{batchHook: func(ctx context.Context, batch []billing.Usage) error {
		b, err := ledger.Balance(ctx, "k1", limits, now)
		if err != nil || b.Holds != 0 {
			return fmt.Errorf("passed on before settled: %+v, %v", b, err)
		}
		return nil
	}}
	s, ok := billing.Settling(&ledger, next).(billing.BatchSink)
	if !ok {
		t.Fatal("Settling over a BatchSink is no BatchSink")
	}
	if err := s.RecordBatch(ctx, us); err != nil {
		t.Fatal(err)
	}
	// Replayed after a crash: the first record again, alone and in a batch.
	if err := s.RecordBatch(ctx, []billing.Usage{us[0], us[0]}); err != nil {
		t.Fatal(err)
	}
	b, err := ledger.Balance(ctx, "k1", limits, now)
	if err != nil {
		t.Fatal(err)
	}
	if b.SpentMicros != 600 || b.Holds != 0 {
		t.Fatalf("spent %d with %d holds, want 600 (100+200+300, each once) and none", b.SpentMicros, b.Holds)
	}
	if sizes, _ := next.calls(); !slices.Equal(sizes, []int{3, 2}) {
		t.Fatalf("next got batches %v, want [3 2]", sizes)
	}

	down := errors.New("ledger unreachable")
	failing := billing.Settling(failingLedger{bad: us[1].RequestID, err: down}, next).(billing.BatchSink)
	if err := failing.RecordBatch(ctx, us); !errors.Is(err, down) {
		t.Fatalf("RecordBatch = %v, want the Settle error", err)
	}
	if sizes, _ := next.calls(); len(sizes) != 2 {
		t.Fatalf("next got batches %v: a batch that failed to settle was passed on", sizes)
	}
	// Not a BatchSink below: Settling stays a plain sink.
	if _, ok := billing.Settling(&ledger, &billing.MemorySink{}).(billing.BatchSink); ok {
		t.Fatal("Settling over a plain sink claims to be a BatchSink")
	}
}

// failingLedger's Settle fails for one request id.
type failingLedger struct {
	bad string
	err error
}

func (failingLedger) Hold(context.Context, billing.Request) (billing.Remaining, error) {
	return billing.Unlimited, nil
}

func (failingLedger) Release(context.Context, string) error { return nil }

func (l failingLedger) Settle(_ context.Context, u billing.Usage) error {
	if u.RequestID == l.bad {
		return l.err
	}
	return nil
}

// An Async over Settling over a BatchSink settles and stores every record
// once in batches.
func TestAsyncSettlingBatch(t *testing.T) {
	var ledger billing.MemoryLedger
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	limits := billing.Limits{BudgetMicros: 10_000_000}
	next := &batchSink{}
	a := billing.NewAsync(billing.Settling(&ledger, next), billing.DeliveryOptions{Workers: 2, MaxBatch: 10, BatchWait: time.Hour})
	for i := range 50 {
		u := record(i)
		u.CostMicros, u.CreatedAt = 10, now
		if _, err := ledger.Hold(ctx, billing.Request{RequestID: u.RequestID, APIKeyID: u.APIKeyID,
			KeyLimits: limits, HoldMicros: 1000, Now: now}); err != nil {
			t.Fatal(err)
		}
		if err := a.Record(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, a, 5*time.Second)
	b, err := ledger.Balance(ctx, "k1", limits, now)
	if err != nil {
		t.Fatal(err)
	}
	if b.SpentMicros != 500 || b.Holds != 0 {
		t.Fatalf("spent %d with %d holds, want 500 and none", b.SpentMicros, b.Holds)
	}
	sizes, singles := next.calls()
	if !slices.Equal(sizes, []int{10, 10, 10, 10, 10}) || len(singles) != 0 {
		t.Fatalf("RecordBatch sizes %v, Record calls %v; want five batches of 10", sizes, singles)
	}
}
