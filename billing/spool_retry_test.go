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

	"github.com/relaykit/responsesrelay/billing"
)

func TestSpoolSinkFailsThenRecovers(t *testing.T) {
	dir := t.TempDir()
	sink := &flaky{failures: 3, calls: map[string]int{}}
	var dropped atomic.Int64
	s := openSpool(t, dir, sink, billing.DeliveryOptions{
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
	}), billing.DeliveryOptions{
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
	s = openSpool(t, dir, &store, billing.DeliveryOptions{})
	closeSpool(t, s)
	if len(store.Records()) != 0 {
		t.Fatalf("dropped records were replayed: %v", requestIDs(store.Records()))
	}
}
