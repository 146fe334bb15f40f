package billing_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
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
func fastSpool(o billing.SpoolOptions) billing.SpoolOptions {
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

func openSpool(t *testing.T, dir string, next billing.UsageSink, o billing.SpoolOptions) *billing.Spool {
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
	s := openSpool(t, t.TempDir(), &store, billing.SpoolOptions{})
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

func TestSpoolReplaysUndeliveredAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir, hung, billing.SpoolOptions{})
	recordAll(t, s, 0, 30)
	if n := s.Pending(); n != 30 {
		t.Fatalf("Pending = %d, want 30", n)
	}
	billing.CrashSpool(s)

	s = openSpool(t, dir, hung, billing.SpoolOptions{}) // still down: nothing is acknowledged
	if n := s.Pending(); n != 30 {
		t.Fatalf("Pending after reopen = %d, want the 30 undelivered records", n)
	}
	billing.CrashSpool(s)

	db := newIdempotent()
	s = openSpool(t, dir, db, billing.SpoolOptions{})
	closeSpool(t, s)
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 30)) {
		t.Fatalf("replayed %v, want all 30", got)
	}
	for id, n := range db.calls {
		if n != 1 {
			t.Fatalf("%s delivered %d times, want once", id, n)
		}
	}
	if left := files(t, dir, ".seg"); len(left) != 0 {
		t.Fatalf("segments left after everything was delivered: %v", left)
	}
}

func TestSpoolDoesNotReplayAcknowledged(t *testing.T) {
	dir := t.TempDir()
	first := newIdempotent()
	evenOnly := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		var i int
		fmt.Sscanf(u.RequestID, "req_%d", &i)
		if i%2 == 1 {
			return errors.New("db: timeout")
		}
		return first.Record(ctx, u)
	})
	s := openSpool(t, dir, evenOnly, billing.SpoolOptions{})
	recordAll(t, s, 0, 20)
	waitPending(t, s, 10) // the even ones are acknowledged
	billing.CrashSpool(s)

	second := newIdempotent()
	s = openSpool(t, dir, second, billing.SpoolOptions{})
	closeSpool(t, s)
	var odd []string
	for i := 1; i < 20; i += 2 {
		odd = append(odd, record(i).RequestID)
	}
	if got := second.ids(); !slices.Equal(got, odd) {
		t.Fatalf("replayed %v, want only the 10 unacknowledged (odd) records", got)
	}
	if got := first.ids(); len(got) != 10 {
		t.Fatalf("first run stored %d records, want 10", len(got))
	}
}

// A record the sink stored but the spool had not acknowledged when the
// process died is delivered again, and an idempotent sink keeps one row.
func TestSpoolRedeliversStoredButUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	db := newIdempotent()
	entered := make(chan struct{})
	dying := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		close(entered)
		<-ctx.Done() // the crash: the write lands, its acknowledgement does not
		return db.Record(ctx, u)
	})
	s := openSpool(t, dir, dying, billing.SpoolOptions{Workers: 1})
	recordAll(t, s, 0, 1)
	<-entered
	billing.CrashSpool(s)
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 1)) {
		t.Fatalf("first run stored %v, want req_000", got)
	}

	s = openSpool(t, dir, db, billing.SpoolOptions{})
	closeSpool(t, s)
	if n := db.calls["req_000"]; n != 2 {
		t.Fatalf("req_000 delivered %d times, want 2 (once more after the restart)", n)
	}
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 1)) {
		t.Fatalf("rows %v, want one row for req_000", got)
	}
}

func TestSpoolIgnoresTornTail(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   int // records delivered after the damage
		warns  bool
	}{
		{"cut mid-record", func(t *testing.T, path string) { truncateBy(t, path, 5) }, n - 1, true},
		{"cut mid-header", func(t *testing.T, path string) { truncateBy(t, path, recordSize(t, path)-3) }, n - 1, true},
		{"bit flip in last record", func(t *testing.T, path string) { flipByteFromEnd(t, path, 2) }, n - 1, true},
		{"garbage appended", func(t *testing.T, path string) { appendBytes(t, path, []byte("\x17\x00\x00\x00garbage!")) }, n, true},
		{"zeros appended", func(t *testing.T, path string) { appendBytes(t, path, make([]byte, 4096)) }, n, true},
		{"huge length appended", func(t *testing.T, path string) { appendBytes(t, path, []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4}) }, n, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openSpool(t, dir, hung, billing.SpoolOptions{})
			recordAll(t, s, 0, n)
			billing.CrashSpool(s)
			segs := files(t, dir, ".seg")
			if len(segs) != 1 {
				t.Fatalf("segments %v, want 1", segs)
			}
			tc.damage(t, segs[0])

			var logs bytes.Buffer
			var store billing.MemorySink
			s = openSpool(t, dir, &store, billing.SpoolOptions{
				Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil)),
			})
			closeSpool(t, s)
			if got := requestIDs(store.Records()); !slices.Equal(got, wantIDs(0, tc.want)) {
				t.Fatalf("delivered %v, want req_000..req_%03d once each", got, tc.want-1)
			}
			if warned := strings.Contains(logs.String(), "torn"); warned != tc.warns {
				t.Fatalf("warned about a torn tail: %v, want %v; log:\n%s", warned, tc.warns, logs.String())
			}
			if left := files(t, dir, ".seg"); len(left) != 0 {
				t.Fatalf("segments left: %v", left)
			}
		})
	}
}

// recordSize is the size of the last record of a segment of equal-sized
// records written by record(i): its JSON plus the 8-byte header.
func recordSize(t *testing.T, _ string) int64 {
	b, err := json.Marshal(record(9))
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b)) + 8
}

func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

func flipByteFromEnd(t *testing.T, path string, back int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-back] ^= 0x20
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(p); err != nil {
		t.Fatal(err)
	}
}

// A torn ack log is cut back to its last whole entry, so that the
// acknowledgements of the next run stay readable.
func TestSpoolTornAckLog(t *testing.T) {
	dir := t.TempDir()
	failFrom := func(min int, store billing.UsageSink) billing.UsageSink {
		return billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
			var i int
			fmt.Sscanf(u.RequestID, "req_%d", &i)
			if i >= min {
				return errors.New("db: down")
			}
			return store.Record(ctx, u)
		})
	}
	var run1, run2, run3 billing.MemorySink
	s := openSpool(t, dir, failFrom(4, &run1), billing.SpoolOptions{Workers: 1})
	recordAll(t, s, 0, 10)
	waitPending(t, s, 6)
	billing.CrashSpool(s)
	acks := files(t, dir, ".ack")
	if len(acks) != 1 {
		t.Fatalf("ack logs %v, want 1", acks)
	}
	appendBytes(t, acks[0], []byte{1, 2, 3, 4, 5}) // a torn entry

	s = openSpool(t, dir, failFrom(7, &run2), billing.SpoolOptions{Workers: 1})
	waitPending(t, s, 3)
	billing.CrashSpool(s)

	s = openSpool(t, dir, &run3, billing.SpoolOptions{})
	closeSpool(t, s)
	for i, c := range []struct {
		got  []billing.Usage
		want []string
	}{{run1.Records(), wantIDs(0, 4)}, {run2.Records(), wantIDs(4, 7)}, {run3.Records(), wantIDs(7, 10)}} {
		if got := requestIDs(c.got); !slices.Equal(got, c.want) {
			t.Fatalf("run %d delivered %v, want %v", i+1, got, c.want)
		}
	}
}

func TestSpoolDeletesDeliveredSegments(t *testing.T) {
	dir := t.TempDir()
	db := newIdempotent()
	s := openSpool(t, dir, db, billing.SpoolOptions{SegmentBytes: 4096})
	recordAll(t, s, 0, 200) // about 500 bytes each: ~25 segments
	waitPending(t, s, 0)
	segs := files(t, dir, ".seg")
	if len(segs) != 1 {
		t.Fatalf("segments on disk after every record was delivered: %v, want only the active one", segs)
	}
	if base := filepath.Base(segs[0]); base < fmt.Sprintf("%020d.seg", 20) {
		t.Fatalf("active segment %s: the spool did not rotate", base)
	}
	closeSpool(t, s)
	if left, _ := os.ReadDir(dir); len(left) != 1 || left[0].Name() != "LOCK" {
		t.Fatalf("directory after a drained Close: %v, want only LOCK", left)
	}
	if got := db.ids(); !slices.Equal(got, wantIDs(0, 200)) {
		t.Fatalf("delivered %d records, want 200", len(got))
	}

	again := newIdempotent()
	s = openSpool(t, dir, again, billing.SpoolOptions{})
	closeSpool(t, s)
	if n := len(again.ids()); n != 0 {
		t.Fatalf("reopen replayed %d delivered records", n)
	}
}

func TestSpoolConcurrentRecordsShareSyncs(t *testing.T) {
	db := newIdempotent()
	s := openSpool(t, t.TempDir(), db, billing.SpoolOptions{})
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
	if syncs > total/8 {
		t.Fatalf("%d fsyncs for %d records: concurrent Records do not share syncs", syncs, total)
	}
}

func TestSpoolSinkFailsThenRecovers(t *testing.T) {
	dir := t.TempDir()
	sink := &flaky{failures: 3, calls: map[string]int{}}
	var dropped atomic.Int64
	s := openSpool(t, dir, sink, billing.SpoolOptions{
		OnDropped: func(billing.Usage, error) { dropped.Add(1) },
	})
	recordAll(t, s, 0, 50)
	closeSpool(t, s)
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 50)) {
		t.Fatalf("stored %d records, want all 50 exactly once", len(got))
	}
	for id, n := range sink.calls {
		if n != 4 {
			t.Fatalf("%s tried %d times, want 4 (3 failures + success)", id, n)
		}
	}
	if n := dropped.Load(); n != 0 {
		t.Fatalf("OnDropped called %d times", n)
	}
}

func TestSpoolMaxRetriesDropsWithReplayableLog(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("db: constraint violated")
	var calls atomic.Int64
	var logs bytes.Buffer
	var mu sync.Mutex
	var dropped []billing.Usage
	s := openSpool(t, dir, billing.SinkFunc(func(context.Context, billing.Usage) error {
		calls.Add(1)
		return boom
	}), billing.SpoolOptions{
		MaxRetries: 2,
		Logger:     slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelError})),
		OnDropped: func(u billing.Usage, err error) {
			if !errors.Is(err, boom) {
				t.Errorf("OnDropped err = %v, want the sink's", err)
			}
			mu.Lock()
			dropped = append(dropped, u)
			mu.Unlock()
		},
	})
	recordAll(t, s, 0, 5)
	closeSpool(t, s) // given-up records are acknowledged: Close drains
	if got := requestIDs(dropped); !slices.Equal(got, wantIDs(0, 5)) {
		t.Fatalf("dropped %v, want the 5 records", got)
	}
	if n := calls.Load(); n != 15 {
		t.Fatalf("sink called %d times, want 15 (5 x (1 + 2 retries))", n)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("got %d error lines, want 5:\n%s", len(lines), logs.String())
	}
	for _, line := range lines {
		var entry struct{ Record billing.Usage }
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatal(err)
		}
		var i int
		fmt.Sscanf(entry.Record.RequestID, "req_%d", &i)
		if !reflect.DeepEqual(entry.Record, record(i)) {
			t.Fatalf("record in the log = %+v, want %+v", entry.Record, record(i))
		}
	}

	var store billing.MemorySink
	s = openSpool(t, dir, &store, billing.SpoolOptions{})
	closeSpool(t, s)
	if store.Len() != 0 {
		t.Fatalf("dropped records were replayed: %v", requestIDs(store.Records()))
	}
}

func TestSpoolCloseDeadlineKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	var dropped atomic.Int64
	s := openSpool(t, dir, hung, billing.SpoolOptions{
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
	s = openSpool(t, dir, &store, billing.SpoolOptions{})
	closeSpool(t, s)
	if got := requestIDs(store.Records()); !slices.Equal(got, wantIDs(0, 5)) {
		t.Fatalf("delivered after reopen: %v, want all 5", got)
	}
}

func TestSpoolMaxBytesBackpressure(t *testing.T) {
	t.Run("waits for room", func(t *testing.T) {
		sink := newGated(record(0).RequestID)
		var logs bytes.Buffer
		s := openSpool(t, t.TempDir(), sink, billing.SpoolOptions{
			MaxBytes: 1, FullWait: time.Hour,
			Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil)),
		})
		waiting := make(chan struct{}, 1)
		billing.OnSpoolRoomWait(s, func() { waiting <- struct{}{} })
		recordAll(t, s, 0, 1) // under budget; its delivery blocks
		<-sink.entered
		done := make(chan error, 1)
		go func() { done <- s.Record(context.Background(), record(1)) }()
		<-waiting
		close(sink.open) // record 0 is acknowledged: room again
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		closeSpool(t, s)
		if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 2)) {
			t.Fatalf("delivered %v", got)
		}
		if strings.Contains(logs.String(), "over MaxBytes") {
			t.Fatalf("warned although room was made:\n%s", logs.String())
		}
	})
	t.Run("writes anyway after FullWait", func(t *testing.T) {
		sink := newGated(record(0).RequestID)
		var logs bytes.Buffer
		s := openSpool(t, t.TempDir(), sink, billing.SpoolOptions{
			MaxBytes: 1, FullWait: 30 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil)),
		})
		recordAll(t, s, 0, 1)
		<-sink.entered
		start := time.Now()
		recordAll(t, s, 1, 2)
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Fatalf("Record over budget returned after %v, before FullWait", d)
		}
		if err := sink.store.WaitLen(context.Background(), 1); err != nil { // req_001, past the budget
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), "over MaxBytes") {
			t.Fatalf("no warning about the budget:\n%s", logs.String())
		}
		close(sink.open)
		closeSpool(t, s)
		if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 2)) {
			t.Fatalf("delivered %v", got)
		}
	})
}

func TestSpoolRecordAfterCloseDeliversDirectly(t *testing.T) {
	var store billing.MemorySink
	s := openSpool(t, t.TempDir(), &store, billing.SpoolOptions{})
	closeSpool(t, s)
	if err := s.Record(context.Background(), record(0)); err != nil {
		t.Fatal(err)
	}
	if store.Len() != 1 {
		t.Fatalf("stored %d records right after Record following Close, want 1", store.Len())
	}

	var dropped atomic.Int64
	s = openSpool(t, t.TempDir(), billing.SinkFunc(func(context.Context, billing.Usage) error {
		return errors.New("db down")
	}), billing.SpoolOptions{MaxRetries: -1, OnDropped: func(billing.Usage, error) { dropped.Add(1) }})
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
	s := openSpool(t, dir, billing.Discard, billing.SpoolOptions{})
	if _, err := billing.OpenSpool(dir, billing.Discard, billing.SpoolOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenSpool on the same dir = %v, want an in-use error", err)
	}
	closeSpool(t, s)
	s = openSpool(t, dir, billing.Discard, billing.SpoolOptions{})
	closeSpool(t, s)

	if _, err := billing.OpenSpool(t.TempDir(), nil, billing.SpoolOptions{}); err == nil {
		t.Fatal("OpenSpool with a nil sink succeeded")
	}
}

func TestOpenSpoolRejectsForeignSegment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", 1)), []byte("not a spool file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := billing.OpenSpool(dir, billing.Discard, billing.SpoolOptions{}); err == nil {
		t.Fatal("OpenSpool took over a file that is not a segment")
	}
}

const helperEnv = "BILLING_SPOOL_HELPER_DIR"

// TestSpoolHelperProcess is the child of TestSpoolSurvivesSIGKILL: it
// records until it is killed, printing "D id" when its sink stores a
// record and "R id" when Record returned.
func TestSpoolHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("child of TestSpoolSurvivesSIGKILL")
	}
	var out sync.Mutex
	say := func(kind, id string) {
		out.Lock()
		defer out.Unlock()
		os.Stdout.WriteString(kind + " " + id + "\n") // one write: atomic on a pipe
	}
	slow := billing.SinkFunc(func(_ context.Context, u billing.Usage) error {
		time.Sleep(time.Millisecond) // a database round trip, slower than the Records: a backlog builds
		say("D", u.RequestID)
		return nil
	})
	s, err := billing.OpenSpool(dir, slow, billing.SpoolOptions{Workers: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				u := record(0)
				u.RequestID = fmt.Sprintf("kill_%06d", n.Add(1))
				if err := s.Record(context.Background(), u); err != nil {
					fmt.Println("record:", err)
					os.Exit(2)
				}
				say("R", u.RequestID)
			}
		})
	}
	wg.Wait() // never: the parent kills the process
}

func TestSpoolSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	recorded, stored := map[string]bool{}, map[string]bool{}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		kind, id, ok := strings.Cut(sc.Text(), " ")
		switch {
		case ok && kind == "R":
			recorded[id] = true
		case ok && kind == "D":
			stored[id] = true
		default:
			t.Errorf("child: %s", sc.Text())
		}
		if len(recorded) >= 3000 && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code runs
				t.Fatal(err)
			}
			killed = true
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err == nil || !killed {
		t.Fatalf("child ended by itself (%v) before it was killed", err)
	}

	replayed := newIdempotent()
	s := openSpool(t, dir, replayed, billing.SpoolOptions{})
	closeSpool(t, s)
	var lost []string
	for id := range recorded {
		if !stored[id] && replayed.calls[id] == 0 {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d records whose Record returned were lost, e.g. %v", len(lost), len(recorded), lost[:min(5, len(lost))])
	}
	for id, n := range replayed.calls {
		if n != 1 {
			t.Fatalf("%s replayed %d times, want once", id, n)
		}
		if !strings.HasPrefix(id, "kill_") {
			t.Fatalf("replayed a record the child never wrote: %q", id)
		}
	}
	if len(replayed.calls) == 0 {
		t.Fatal("nothing was replayed: the kill did not catch any record in flight")
	}
	t.Logf("child: %d records returned, %d stored before the kill; %d replayed after it",
		len(recorded), len(stored), len(replayed.calls))
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
			s, err := billing.OpenSpool(b.TempDir(), billing.Discard, billing.SpoolOptions{
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
