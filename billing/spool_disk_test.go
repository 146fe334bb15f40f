package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

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
			s := openSpool(t, dir, hung, billing.DeliveryOptions{})
			recordAll(t, s, 0, n)
			billing.CrashSpool(s)
			segs := files(t, dir, ".seg")
			if len(segs) != 1 {
				t.Fatalf("segments %v, want 1", segs)
			}
			tc.damage(t, segs[0])

			var logs bytes.Buffer
			var store billing.MemorySink
			s = openSpool(t, dir, &store, billing.DeliveryOptions{
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
	s := openSpool(t, dir, failFrom(4, &run1), billing.DeliveryOptions{Workers: 1})
	recordAll(t, s, 0, 10)
	waitPending(t, s, 6)
	billing.CrashSpool(s)
	acks := files(t, dir, ".ack")
	if len(acks) != 1 {
		t.Fatalf("ack logs %v, want 1", acks)
	}
	appendBytes(t, acks[0], []byte{1, 2, 3, 4, 5}) // a torn entry

	s = openSpool(t, dir, failFrom(7, &run2), billing.DeliveryOptions{Workers: 1})
	waitPending(t, s, 3)
	billing.CrashSpool(s)

	s = openSpool(t, dir, &run3, billing.DeliveryOptions{})
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
	s := openSpool(t, dir, db, billing.WithSegmentBytes(billing.DeliveryOptions{}, 4096))
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
	s = openSpool(t, dir, again, billing.DeliveryOptions{})
	closeSpool(t, s)
	if n := len(again.ids()); n != 0 {
		t.Fatalf("reopen replayed %d delivered records", n)
	}
}

func TestSpoolMaxBytesBackpressure(t *testing.T) {
	t.Run("waits for room", func(t *testing.T) {
		sink := newGated(record(0).RequestID)
		var logs bytes.Buffer
		s := openSpool(t, t.TempDir(), sink, billing.DeliveryOptions{
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
		s := openSpool(t, t.TempDir(), sink, billing.DeliveryOptions{
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
