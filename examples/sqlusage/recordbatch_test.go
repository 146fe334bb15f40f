package sqlusage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// samples makes records rr_<prefix>_00 … with input_tokens 11.
func samples(prefix string, from, to int) []billing.Usage {
	var us []billing.Usage
	for i := from; i < to; i++ {
		us = append(us, sample(fmt.Sprintf("rr_%s_%02d", prefix, i)))
	}
	return us
}

// bounded is a context ending after 10 s, the bound of a call that must
// not wait for the hour-long WithMaxDelay of the tests below.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rejectPoison makes the database refuse the record rr_poison.
func rejectPoison(t *testing.T, s *sqlusage.Sink) {
	t.Helper()
	ctx := context.Background()
	if s.Pool() != nil {
		for _, q := range []string{
			`CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS
			 $$ BEGIN IF NEW.request_id = 'rr_poison' THEN RAISE EXCEPTION 'rejected'; END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER reject_poison BEFORE INSERT ON usage_records FOR EACH ROW EXECUTE FUNCTION reject_poison()`,
		} {
			if _, err := s.Pool().Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	_, err := s.DB().ExecContext(ctx, `CREATE TRIGGER reject_poison BEFORE INSERT ON usage_records
		WHEN NEW.request_id = 'rr_poison' BEGIN SELECT RAISE(ABORT, 'rejected'); END`)
	if err != nil {
		t.Fatal(err)
	}
}

// A batch is one transaction, written at once whatever WithMaxDelay; a
// request id repeated in it, or already stored, keeps its first row.
func TestRecordBatchOneTransaction(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxDelay(time.Hour), sqlusage.WithMaxBatch(8), sqlusage.WithWriters(1))
		var got sizes
		sqlusage.OnWrite(s, got.add)
		us := samples("b", 0, 40)
		dup := us[0]
		dup.InputTokens = 999
		us = append(us, dup)
		us[5].CreatedAt = time.Time{} // stored with the time of the write
		before := slices.Clone(us)
		if err := s.RecordBatch(bounded(t), us); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(us, before) {
			t.Fatal("RecordBatch changed the caller's records")
		}
		if n := countRows(t, s); n != 40 {
			t.Fatalf("rows = %d, want 40", n)
		}
		if in := queryInt(t, s, `SELECT input_tokens FROM usage_records WHERE request_id = $1`, "rr_b_00"); in != 11 {
			t.Fatalf("input_tokens = %d, want 11 from the first copy in the batch", in)
		}

		// A retry overlapping the stored rows: only the new ones count.
		again := samples("b", 30, 50)
		for i := range again {
			again[i].InputTokens = 500
		}
		if err := s.RecordBatch(bounded(t), again); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, s); n != 50 {
			t.Fatalf("rows = %d, want 50", n)
		}
		if sum := queryInt(t, s, `SELECT sum(input_tokens) FROM usage_records`); sum != 40*11+10*500 {
			t.Fatalf("sum(input_tokens) = %d, want %d: a stored row was overwritten", sum, 40*11+10*500)
		}
		if w := got.get(); !slices.Equal(w, []int{40, 20}) {
			t.Fatalf("writes of %v rows, want [40 20]: one transaction per batch", w)
		}
		if err := s.RecordBatch(bounded(t), nil); err != nil {
			t.Fatalf("empty batch: %v", err)
		}
		if w := sqlusage.Writes(s); w != 2 {
			t.Fatalf("writes = %d after an empty batch, want 2", w)
		}
	})
}

// A Record waiting out WithMaxDelay joins the next batch, which ends the
// wait: both are written in one transaction.
func TestRecordBatchTakesWaitingRecords(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		var got sizes
		sqlusage.OnWrite(s, got.add)
		enqueued := make(chan struct{}, 2)
		sqlusage.OnEnqueue(s, func() { enqueued <- struct{}{} })
		single := make(chan error, 1)
		go func() { single <- s.Record(bounded(t), sample("rr_single")) }()
		<-enqueued
		if err := s.RecordBatch(bounded(t), samples("b", 0, 5)); err != nil {
			t.Fatal(err)
		}
		if err := <-single; err != nil {
			t.Fatal(err)
		}
		wantWrites(t, s, &got, []int{6}, 6)
	})
}

// A batch holding a record the database rejects stores nothing; a Record
// that shared its transaction is stored on its own.
func TestRecordBatchAllOrNothing(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, sqlusage.WithMaxDelay(time.Hour), sqlusage.WithWriters(1))
		rejectPoison(t, s)
		poisoned := append(samples("ok", 0, 3), sample("rr_poison"))
		if err := s.RecordBatch(bounded(t), poisoned); err == nil {
			t.Fatal("a batch holding a rejected record returned nil")
		}
		if n := countRows(t, s); n != 0 {
			t.Fatalf("rows = %d, want 0: the batch is all or nothing", n)
		}

		enqueued := make(chan struct{}, 2)
		sqlusage.OnEnqueue(s, func() { enqueued <- struct{}{} })
		single := make(chan error, 1)
		go func() { single <- s.Record(bounded(t), sample("rr_single")) }()
		<-enqueued
		writes := sqlusage.Writes(s)
		if err := s.RecordBatch(bounded(t), poisoned); err == nil {
			t.Fatal("a batch holding a rejected record returned nil")
		}
		if err := <-single; err != nil {
			t.Fatalf("the Record sharing the failed transaction: %v", err)
		}
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d, want only rr_single", n)
		}
		if w := sqlusage.Writes(s) - writes; w != 3 {
			t.Fatalf("%d writes, want 3: together, then each caller's alone", w)
		}
	})
}

func TestRecordBatchRefusals(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		us := samples("r", 0, 3)
		us[1].RequestID = ""
		if err := s.RecordBatch(bounded(t), us); err == nil {
			t.Fatal("a batch with a record without request id returned nil")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.RecordBatch(ctx, samples("r", 0, 3)); !errors.Is(err, context.Canceled) {
			t.Fatalf("RecordBatch = %v, want context.Canceled", err)
		}
		if n := countRows(t, s); n != 0 {
			t.Fatalf("rows = %d, want 0", n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordBatch(bounded(t), samples("r", 0, 3)); !errors.Is(err, sqlusage.ErrClosed) {
			t.Fatalf("RecordBatch after Close = %v, want ErrClosed", err)
		}
	})
}

// Through billing.Async, as relayd delivers: a batch holding a record the
// database rejects falls back to Record, the others are stored, and only
// the rejected one reaches OnDropped.
func TestAsyncBatchDropsOnlyTheRejectedRecord(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		rejectPoison(t, s)
		var mu sync.Mutex
		var dropped []string
		a := billing.NewAsync(s, billing.DeliveryOptions{
			Workers: 1, MaxBatch: 16, BatchWait: time.Hour, MaxRetries: 1,
			RetryBase: time.Millisecond, RetryMax: 2 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler),
			OnDropped: func(u billing.Usage, _ error) {
				mu.Lock()
				defer mu.Unlock()
				dropped = append(dropped, u.RequestID)
			},
		})
		records := append(samples("ok", 0, 15), sample("rr_poison"))
		for _, u := range records {
			if err := a.Record(context.Background(), u); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Close(bounded(t)); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(dropped, []string{"rr_poison"}) {
			t.Fatalf("dropped %v, want only rr_poison", dropped)
		}
		if n := countRows(t, s); n != 15 {
			t.Fatalf("rows = %d, want the 15 others", n)
		}
	})
}

// Through billing.Async with few workers, each record sent twice: every
// request id lands once, in far fewer transactions than records.
func TestAsyncBatchesExactlyOnce(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		a := billing.NewAsync(s, billing.DeliveryOptions{Workers: 2, BatchWait: time.Hour})
		const distinct = 300
		var wantTokens int64
		for i := range distinct {
			u := sample(fmt.Sprintf("rr_async_%03d", i))
			u.InputTokens = int64(i)
			wantTokens += u.InputTokens
			for range 2 {
				if err := a.Record(context.Background(), u); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := a.Close(bounded(t)); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, s); n != distinct {
			t.Fatalf("rows = %d, want %d", n, distinct)
		}
		if sum := queryInt(t, s, `SELECT sum(input_tokens) FROM usage_records`); sum != wantTokens {
			t.Fatalf("sum(input_tokens) = %d, want %d", sum, wantTokens)
		}
		// 600 records, batches of 128 closed when full or by Close.
		if w := sqlusage.Writes(s); w > 5 {
			t.Fatalf("%d transactions for 600 records, want at most 5", w)
		}
	})
}
