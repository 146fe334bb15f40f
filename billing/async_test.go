package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

var _ billing.UsageSink = (*billing.Async)(nil)
var _ billing.UsageSink = (*billing.MemorySink)(nil)

// fast keeps the retry waits of a test in the millisecond range.
func fast(o billing.DeliveryOptions) billing.DeliveryOptions {
	if o.RetryBase == 0 {
		o.RetryBase = time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 2 * time.Millisecond
	}
	return o
}

func record(i int) billing.Usage {
	return billing.Usage{
		RequestID: fmt.Sprintf("req_%03d", i), ResponseID: fmt.Sprintf("resp_%03d", i),
		UserID: "u1", APIKeyID: "k1", GroupID: "g1", AccountID: "acct1",
		Model: "gpt-5", UpstreamModel: "gpt-5-2025", Transport: "http", Stream: true, Turn: 1,
		InputTokens: 100 + int64(i), CachedInputTokens: 10, OutputTokens: 20, ReasoningTokens: 5, TotalTokens: 120 + int64(i),
		ServiceTier: "default", Status: billing.StatusCompleted, Attempts: 1, FirstTokenMS: 42, DurationMS: 900,
		UserAgent: "codex_cli_rs/0.50.0", ClientIP: "203.0.113.7",
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
}

func requestIDs(us []billing.Usage) []string {
	ids := make([]string, len(us))
	for i, u := range us {
		ids[i] = u.RequestID
	}
	slices.Sort(ids)
	return ids
}

func wantIDs(from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, record(i).RequestID)
	}
	return ids
}

func closeWithin(t *testing.T, a *billing.Async, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// flaky fails the first failures calls for each record, then stores it.
type flaky struct {
	failures int
	mu       sync.Mutex
	calls    map[string]int
	store    billing.MemorySink
}

func (f *flaky) Record(ctx context.Context, u billing.Usage) error {
	f.mu.Lock()
	f.calls[u.RequestID]++
	n := f.calls[u.RequestID]
	f.mu.Unlock()
	if n <= f.failures {
		return fmt.Errorf("db: deadlock (try %d)", n)
	}
	return f.store.Record(ctx, u)
}

func TestAsyncRetriesUntilSinkRecovers(t *testing.T) {
	sink := &flaky{failures: 3, calls: map[string]int{}}
	var dropped atomic.Int64
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		MaxRetries: 3,
		OnDropped:  func(billing.Usage, error) { dropped.Add(1) },
	}))
	for i := range 50 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	closeWithin(t, a, 5*time.Second)

	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 50)) {
		t.Fatalf("stored %d records %v, want all 50 exactly once", len(got), got)
	}
	if n := dropped.Load(); n != 0 {
		t.Fatalf("OnDropped called %d times, want 0", n)
	}
	for id, n := range sink.calls {
		if n != 4 {
			t.Fatalf("%s tried %d times, want 4 (3 failures + success)", id, n)
		}
	}
	for _, u := range sink.store.Records() {
		var i int
		fmt.Sscanf(u.RequestID, "req_%d", &i)
		if !reflect.DeepEqual(u, record(i)) {
			t.Fatalf("stored %+v\nwant %+v", u, record(i))
		}
	}
}

func TestAsyncDropsAfterLastRetryWithReplayableLog(t *testing.T) {
	boom := errors.New("db: relation \"usage\" does not exist")
	var calls atomic.Int64
	sink := billing.SinkFunc(func(context.Context, billing.Usage) error {
		calls.Add(1)
		return boom
	})
	var logs bytes.Buffer
	var mu sync.Mutex
	var dropped []billing.Usage
	var errs []error
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		MaxRetries: 2,
		Logger:     slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, nil)),
		OnDropped: func(u billing.Usage, err error) {
			mu.Lock()
			defer mu.Unlock()
			dropped = append(dropped, u)
			errs = append(errs, err)
		},
	}))
	for i := range 3 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	closeWithin(t, a, 5*time.Second)

	if got := requestIDs(dropped); !slices.Equal(got, wantIDs(0, 3)) {
		t.Fatalf("dropped %v, want exactly the 3 records", got)
	}
	for _, err := range errs {
		if !errors.Is(err, boom) {
			t.Fatalf("OnDropped err = %v, want the sink's error", err)
		}
	}
	if n := calls.Load(); n != 9 {
		t.Fatalf("sink called %d times, want 9 (3 records x (1 + 2 retries))", n)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d log lines, want 3:\n%s", len(lines), logs.String())
	}
	var replayed []billing.Usage
	for _, line := range lines {
		var entry struct {
			Level    string
			Attempts int
			Error    string
			Record   billing.Usage
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		if entry.Level != "ERROR" || entry.Attempts != 3 || !strings.Contains(entry.Error, boom.Error()) {
			t.Fatalf("log line = %s; want level ERROR, attempts 3 and the sink error", line)
		}
		replayed = append(replayed, entry.Record)
	}
	for _, u := range replayed {
		var i int
		fmt.Sscanf(u.RequestID, "req_%d", &i)
		if !reflect.DeepEqual(u, record(i)) {
			t.Fatalf("record from the log = %+v\nwant %+v", u, record(i))
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// gated blocks the first delivery of one record until open is closed.
type gated struct {
	blockID string
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
	store   billing.MemorySink
}

func newGated(blockID string) *gated {
	return &gated{blockID: blockID, entered: make(chan struct{}), open: make(chan struct{})}
}

func (g *gated) Record(ctx context.Context, u billing.Usage) error {
	if u.RequestID == g.blockID {
		g.once.Do(func() { close(g.entered) })
		<-g.open
	}
	return g.store.Record(ctx, u)
}

func TestAsyncBackpressureWritesInsteadOfDropping(t *testing.T) {
	sink := newGated(record(0).RequestID)
	var dropped atomic.Int64
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, QueueSize: 1, EnqueueTimeout: 20 * time.Millisecond,
		OnDropped: func(billing.Usage, error) { dropped.Add(1) },
	}))
	ctx := context.Background()
	if err := a.Record(ctx, record(0)); err != nil { // taken by the only worker, which blocks
		t.Fatal(err)
	}
	<-sink.entered
	if err := a.Record(ctx, record(1)); err != nil { // fills the queue
		t.Fatal(err)
	}
	if n := a.Pending(); n != 1 {
		t.Fatalf("Pending = %d, want 1", n)
	}

	start := time.Now()
	if err := a.Record(ctx, record(2)); err != nil { // no room: written by the caller
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Record returned after %v, before EnqueueTimeout", d)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, []string{"req_002"}) {
		t.Fatalf("stored %v right after the blocked Record, want req_002 written synchronously", got)
	}

	// An ended ctx stops the wait for room, not the delivery.
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Record(ended, record(3)); err != nil {
		t.Fatal(err)
	}
	if len(sink.store.Records()) != 2 {
		t.Fatalf("stored %d records, want req_003 written despite the ended ctx", len(sink.store.Records()))
	}

	close(sink.open)
	closeWithin(t, a, 5*time.Second)
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 4)) {
		t.Fatalf("stored %v, want all 4", got)
	}
	if dropped.Load() != 0 {
		t.Fatal("a record was dropped")
	}
}

func TestAsyncCloseDrainsThenWritesSynchronously(t *testing.T) {
	sink := newGated(record(0).RequestID)
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{Workers: 2, QueueSize: 200}))
	for i := range 100 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-sink.entered
	closed := make(chan error, 1)
	go func() { closed <- a.Close(context.Background()) }()

	// Close waits for the blocked delivery: it cannot have drained yet.
	if err := sink.store.WaitLen(context.Background(), 99); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a delivery was still blocked", err)
	default:
	}
	close(sink.open)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := requestIDs(sink.store.Records()); !slices.Equal(got, wantIDs(0, 100)) {
		t.Fatalf("stored %d records, want all 100 once", len(got))
	}

	if err := a.Record(context.Background(), record(100)); err != nil {
		t.Fatalf("Record after Close: %v", err)
	}
	if n := len(sink.store.Records()); n != 101 {
		t.Fatalf("stored %d records right after Record following Close, want 101", n)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestAsyncCloseDeadlineDropsTheRest(t *testing.T) {
	// The sink hangs until its context ends; only Close's deadline ends it.
	entered := make(chan struct{}, 10)
	sink := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		entered <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	droppedc := make(chan error, 10)
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, QueueSize: 10, AttemptTimeout: -1,
		Logger:    slog.New(slog.DiscardHandler),
		OnDropped: func(_ billing.Usage, err error) { droppedc <- err },
	}))
	for i := range 5 {
		if err := a.Record(context.Background(), record(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
	}
	// All five are dropped: the queued ones by Close, the one in the sink
	// as soon as its call returns.
	for range 5 {
		if err := <-droppedc; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("OnDropped err = %v, want it to carry Close's deadline", err)
		}
	}
}

func TestAsyncCloseDeadlineStopsRetries(t *testing.T) {
	boom := errors.New("db down")
	var calls atomic.Int64
	droppedc := make(chan error, 1)
	a := billing.NewAsync(billing.SinkFunc(func(context.Context, billing.Usage) error {
		calls.Add(1)
		return boom
	}), billing.DeliveryOptions{
		Workers: 1, RetryBase: time.Hour,
		Logger:    slog.New(slog.DiscardHandler),
		OnDropped: func(_ billing.Usage, err error) { droppedc <- err },
	})
	if err := a.Record(context.Background(), record(0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
	}
	err := <-droppedc
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the drop took %v: the hour-long retry wait was not cut short", d)
	}
	if !errors.Is(err, boom) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("OnDropped err = %v, want both the sink error and Close's deadline", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("sink called %d times, want 1", n)
	}
}

func TestAsyncSurvivesPanics(t *testing.T) {
	var calls atomic.Int64
	sink := billing.SinkFunc(func(context.Context, billing.Usage) error {
		if calls.Add(1) == 1 {
			panic("sink bug")
		}
		return errors.New("still failing")
	})
	var logs bytes.Buffer
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{
		Workers: 1, MaxRetries: 1,
		Logger:    slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs}, nil)),
		OnDropped: func(billing.Usage, error) { panic("hook bug") },
	}))
	if err := a.Record(context.Background(), record(0)); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, a, 5*time.Second)
	if n := calls.Load(); n != 2 {
		t.Fatalf("sink called %d times, want 2: a panic counts as a failed attempt", n)
	}
	out := logs.String()
	if !strings.Contains(out, "usage record dropped") || !strings.Contains(out, "OnDropped panicked") {
		t.Fatalf("log lacks the drop or the hook panic:\n%s", out)
	}
}

func TestAsyncSynchronousDropReturnsErrDropped(t *testing.T) {
	boom := errors.New("db down")
	var dropped atomic.Int64
	a := billing.NewAsync(billing.SinkFunc(func(context.Context, billing.Usage) error { return boom }),
		fast(billing.DeliveryOptions{
			MaxRetries: -1,
			Logger:     slog.New(slog.DiscardHandler),
			OnDropped:  func(billing.Usage, error) { dropped.Add(1) },
		}))
	closeWithin(t, a, 5*time.Second)
	err := a.Record(context.Background(), record(0))
	if !errors.Is(err, billing.ErrDropped) || !errors.Is(err, boom) {
		t.Fatalf("Record after Close = %v, want ErrDropped wrapping the sink error", err)
	}
	if dropped.Load() != 1 {
		t.Fatalf("OnDropped called %d times, want 1", dropped.Load())
	}
}

func TestAsyncAttemptTimeout(t *testing.T) {
	var calls atomic.Int64
	sink := billing.SinkFunc(func(ctx context.Context, u billing.Usage) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a hung first call
			return ctx.Err()
		}
		return nil
	})
	a := billing.NewAsync(sink, fast(billing.DeliveryOptions{AttemptTimeout: 10 * time.Millisecond}))
	if err := a.Record(context.Background(), record(0)); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, a, 5*time.Second)
	if n := calls.Load(); n != 2 {
		t.Fatalf("sink called %d times, want 2: the hung call times out and is retried", n)
	}
}

func TestAsyncConcurrentRecordAndClose(t *testing.T) {
	var store billing.MemorySink
	a := billing.NewAsync(&store, fast(billing.DeliveryOptions{Workers: 3, QueueSize: 4, EnqueueTimeout: time.Millisecond}))
	var wg sync.WaitGroup
	const producers, each = 8, 50
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if err := a.Record(context.Background(), record(p*each+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	closeWithin(t, a, 5*time.Second) // races with the producers on purpose
	wg.Wait()
	if got := requestIDs(store.Records()); !slices.Equal(got, wantIDs(0, producers*each)) {
		t.Fatalf("stored %d records, want all %d exactly once", len(got), producers*each)
	}
}

func TestNewAsyncNilSinkPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewAsync(nil) did not panic")
		}
	}()
	billing.NewAsync(nil, billing.DeliveryOptions{})
}
