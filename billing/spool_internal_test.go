package billing

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSpoolOptionsDefaults(t *testing.T) {
	got := DeliveryOptions{}.forSpool()
	if got.CommitDelay != 0 || got.commitBytes != 256<<10 || got.segmentBytes != 16<<20 ||
		got.MaxBytes != 1<<30 || got.FullWait != time.Second || got.Workers != 4 ||
		got.AttemptTimeout != 10*time.Second || got.MaxRetries != 0 ||
		got.RetryBase != 100*time.Millisecond || got.RetryMax != 5*time.Second {
		t.Fatalf("defaults = %+v", got)
	}
	neg := DeliveryOptions{CommitDelay: -1, MaxBytes: -1, FullWait: -1, AttemptTimeout: -1, MaxRetries: -1}.forSpool()
	if neg.CommitDelay >= 0 || neg.MaxBytes >= 0 || neg.FullWait >= 0 || neg.AttemptTimeout >= 0 || neg.MaxRetries != -1 {
		t.Fatalf("negative options must mean none: %+v", neg)
	}
}

func TestSpoolWriteFailureDeliversDirectly(t *testing.T) {
	var store MemorySink
	var logs bytes.Buffer
	var mu sync.Mutex
	s, err := OpenSpool(t.TempDir(), &store, DeliveryOptions{
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Record(ctx, Usage{RequestID: "req_0"}); err != nil {
		t.Fatal(err)
	}
	// The committer is idle until the next Record: break its file under it.
	first := s.active
	first.f.Close()
	if err := s.Record(ctx, Usage{RequestID: "req_1"}); err != nil {
		t.Fatalf("Record with a failing disk = %v, want nil after direct delivery", err)
	}
	if err := s.Record(ctx, Usage{RequestID: "req_2"}); err != nil {
		t.Fatal(err)
	}
	if s.active == first {
		t.Fatal("the spool kept writing to the broken segment")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range store.Records() {
		ids = append(ids, u.RequestID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"req_0", "req_1", "req_2"}) {
		t.Fatalf("delivered %v, want each record once", ids)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "write failed") {
		t.Fatalf("no error logged for the failed write:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
