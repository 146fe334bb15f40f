package billing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

func TestMemorySink(t *testing.T) {
	var s billing.MemorySink
	if len(s.Records()) != 0 {
		t.Fatal("zero MemorySink is not empty")
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { _ = s.Record(context.Background(), record(i)) })
	}
	wg.Wait()
	if len(s.Records()) != 20 {
		t.Fatalf("Len = %d, want 20", len(s.Records()))
	}
	got := s.Records()
	got[0].RequestID = "changed"
	if s.Records()[0].RequestID == "changed" {
		t.Fatal("Records returned the sink's own slice, not a copy")
	}
}

func TestMemorySinkWaitLen(t *testing.T) {
	var s billing.MemorySink
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.WaitLen(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLen on an empty sink = %v, want the ctx error", err)
	}

	done := make(chan error, 1)
	go func() { done <- s.WaitLen(context.Background(), 3) }()
	for i := range 3 {
		_ = s.Record(context.Background(), record(i))
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitLen: %v", err)
	}
	if err := s.WaitLen(context.Background(), 2); err != nil {
		t.Fatalf("WaitLen below Len: %v", err)
	}
}
