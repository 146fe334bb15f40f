package sqlusage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// recordAll calls Record for each record from its own goroutine and
// returns the errors by request id (nil for stored ones).
func recordAll(s *sqlusage.Sink, records ...billing.Usage) map[string]error {
	var (
		mu   sync.Mutex
		errs = map[string]error{}
		wg   sync.WaitGroup
	)
	for _, u := range records {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := s.Record(ctx, u)
			mu.Lock()
			defer mu.Unlock()
			if errs[u.RequestID] == nil {
				errs[u.RequestID] = err
			}
		})
	}
	wg.Wait()
	return errs
}

func noErrors(t *testing.T, errs map[string]error) {
	t.Helper()
	for id, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// sizes records the row count of each write.
type sizes struct {
	mu sync.Mutex
	n  []int
}

func (z *sizes) add(n int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.n = append(z.n, n)
}

func (z *sizes) get() []int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Clone(z.n)
}

// wantWrites checks that the transactions written held writes rows each,
// in that order, and that the table holds rows rows.
func wantWrites(t *testing.T, s *sqlusage.Sink, got *sizes, writes []int, rows int64) {
	t.Helper()
	if w := got.get(); !slices.Equal(w, writes) {
		t.Fatalf("writes of %v rows, want %v", w, writes)
	}
	if n := countRows(t, s); n != rows {
		t.Fatalf("rows = %d, want %d", n, rows)
	}
}

func TestIdempotentByRequestID(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		ctx := context.Background()
		u := sample("rr_dup")
		for range 3 {
			if err := s.Record(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		u.InputTokens = 999 // a retry never overwrites the first write
		if err := s.Record(ctx, u); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d, want 1", n)
		}
		if in := queryInt(t, s, `SELECT input_tokens FROM usage_records WHERE request_id = $1`, "rr_dup"); in != 11 {
			t.Fatalf("input_tokens = %d, want 11 from the first write", in)
		}
	})
}

func TestIdempotentWithinABatch(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		// The batch is written only when full: all four share it.
		s := tg.open(t, sqlusage.WithMaxBatch(4), sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		a, b := sample("rr_a"), sample("rr_b")
		a2, b2 := a, b
		a2.InputTokens, b2.InputTokens = 500, 500
		noErrors(t, recordAll(s, a, a2, b, b2))
		if w := sqlusage.Writes(s); w != 1 {
			t.Errorf("writes = %d, want 1 batch", w)
		}
		if n := countRows(t, s); n != 2 {
			t.Fatalf("rows = %d, want 2", n)
		}
		// Then again, as a retry would: nothing changes.
		noErrors(t, recordAll(s, a, b, a2, b2))
		if n := countRows(t, s); n != 2 {
			t.Fatalf("rows after retry = %d, want 2", n)
		}
	})
}

// Concurrent records through billing.Async, as relayd uses it, each sent
// twice: every request id lands exactly once by the time Close returns.
func TestThroughAsyncExactlyOnce(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		ctx := context.Background()
		a := billing.NewAsync(s, billing.DeliveryOptions{Workers: 64, QueueSize: 128})
		const distinct = 300
		var wantTokens int64
		var wg sync.WaitGroup
		for i := range distinct {
			u := sample(fmt.Sprintf("rr_async_%03d", i))
			u.InputTokens = int64(i)
			wantTokens += u.InputTokens
			for range 2 {
				wg.Go(func() {
					if err := a.Record(ctx, u); err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, s); n != distinct {
			t.Fatalf("rows = %d, want %d", n, distinct)
		}
		if sum := queryInt(t, s, `SELECT sum(input_tokens) FROM usage_records`); sum != wantTokens {
			t.Fatalf("sum(input_tokens) = %d, want %d", sum, wantTokens)
		}
		t.Logf("%d records in %d transactions", 2*distinct, sqlusage.Writes(s))
	})
}

func TestBatchWrittenWhenFull(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxBatch(16), sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		var got sizes
		sqlusage.OnWrite(s, got.add)
		var records []billing.Usage
		for i := range 16 {
			records = append(records, sample(fmt.Sprintf("rr_full_%02d", i)))
		}
		noErrors(t, recordAll(s, records...))
		wantWrites(t, s, &got, []int{16}, 16)
	})
}

// Without a delay, the records that arrive while a batch is being written
// form the next batch.
func TestRecordsWaitingDuringAWriteShareTheNext(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxBatch(8), sqlusage.WithWriters(1))
		var got sizes
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		sqlusage.OnWrite(s, func(n int) {
			got.add(n)
			once.Do(func() {
				close(started)
				<-release // hold the writer in its first write
			})
		})
		enqueued := make(chan struct{}, 16)
		sqlusage.OnEnqueue(s, func() { enqueued <- struct{}{} })

		first := make(chan map[string]error)
		go func() { first <- recordAll(s, sample("rr_first")) }()
		<-started
		<-enqueued
		rest := make(chan map[string]error)
		var records []billing.Usage
		for i := range 8 {
			records = append(records, sample(fmt.Sprintf("rr_next_%d", i)))
		}
		go func() { rest <- recordAll(s, records...) }()
		for range 8 {
			<-enqueued
		}
		close(release)
		noErrors(t, <-first)
		noErrors(t, <-rest)
		wantWrites(t, s, &got, []int{1, 8}, 9)
	})
}

func TestShutdownFlushes(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		// No batch would be written before an hour or 128 records.
		s := tg.open(t, sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		enqueued := make(chan struct{}, 8)
		sqlusage.OnEnqueue(s, func() { enqueued <- struct{}{} })
		var records []billing.Usage
		for i := range 5 {
			records = append(records, sample(fmt.Sprintf("rr_flush_%d", i)))
		}
		done := make(chan map[string]error)
		go func() { done <- recordAll(s, records...) }()
		for range 5 {
			<-enqueued
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		noErrors(t, <-done)
		if w := sqlusage.Writes(s); w != 1 {
			t.Errorf("writes = %d, want 1", w)
		}
		if err := s.Record(ctx, sample("rr_late")); !errors.Is(err, sqlusage.ErrClosed) {
			t.Fatalf("Record after Shutdown = %v, want ErrClosed", err)
		}
		if n := countRows(t, tg.open(t)); n != 5 {
			t.Fatalf("rows after reopen = %d, want 5", n)
		}
	})
}

// A record the database rejects fails alone; the others of its batch are
// stored.
func TestRejectedRecordFailsAlone(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxBatch(4), sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		rejectPoison(t, s)
		errs := recordAll(s, sample("rr_ok1"), sample("rr_poison"), sample("rr_ok2"), sample("rr_ok3"))
		if errs["rr_poison"] == nil {
			t.Error("the rejected record returned nil")
		}
		delete(errs, "rr_poison")
		noErrors(t, errs)
		if n := countRows(t, s); n != 3 {
			t.Fatalf("rows = %d, want 3", n)
		}
		if w := sqlusage.Writes(s); w != 5 {
			t.Errorf("writes = %d, want the batch and then 4 one by one", w)
		}
	})
}

func TestCancelledContext(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Record(ctx, sample("rr_c")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Record = %v, want context.Canceled", err)
		}
		if n := countRows(t, s); n != 0 {
			t.Fatalf("rows = %d, want 0", n)
		}
	})
}

func TestOpenDispatch(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlusage.Open(ctx, "mysql", "x"); err == nil {
		t.Fatal("unknown driver accepted")
	} else {
		t.Log(err)
	}
	s, err := sqlusage.Open(ctx, "", sqliteTarget(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Driver() != sqlusage.DriverSQLite || s.DB() == nil || s.Pool() != nil {
		t.Fatalf("driver %q, DB %v, Pool %v", s.Driver(), s.DB(), s.Pool())
	}
	if _, err := sqlusage.Open(ctx, "postgres", " "); err == nil {
		t.Fatal("empty PostgreSQL URL accepted")
	}
}
