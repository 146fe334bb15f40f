package relay

import (
	"context"
	"errors"
	"testing"
)

// A reservation waiting for a full budget ends with its context and leaves
// nothing behind: no bytes, no per-user entry.
func TestBodyBudgetWaitEndsWithContext(t *testing.T) {
	b := newBodyBudget(100, 10)
	l, err := b.reserve(context.Background(), "u", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.reserve(ctx, "u", 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("reserve on a full budget with a cancelled context: %v", err)
	}
	if a := bodyBudgetAnswer(context.Canceled); a != errClientGone {
		t.Fatalf("answer %+v, want client gone", a)
	}
	l.release()
	l.release() // idempotent
	if n := b.held.Load(); n != 0 {
		t.Fatalf("%d bytes held after release", n)
	}
	if len(b.users) != 0 {
		t.Fatalf("per-user entries left: %v", b.users)
	}
	// The budgets are whole again.
	if !b.total.TryAcquire(100) {
		t.Fatal("total budget not given back")
	}
}

// A reservation larger than a budget takes the whole budget, so one body
// always fits; shrinking gives back the rest.
func TestBodyBudgetOversizeAndShrink(t *testing.T) {
	b := newBodyBudget(50, 20)
	l, err := b.reserve(context.Background(), "u", 80, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.userN != 20 || l.totalN != 50 || b.held.Load() != 50 {
		t.Fatalf("reserved user %d total %d held %d", l.userN, l.totalN, b.held.Load())
	}
	l.shrink(5)
	if b.held.Load() != 5 || !b.total.TryAcquire(45) {
		t.Fatalf("after shrink: held %d", b.held.Load())
	}
	b.total.Release(45)
	l.release()
	if b.held.Load() != 0 || b.peak.Load() != 50 {
		t.Fatalf("held %d peak %d", b.held.Load(), b.peak.Load())
	}
}

// Off budgets cost nothing: no lease, and a nil lease is safe to use.
func TestBodyBudgetOff(t *testing.T) {
	b := newBodyBudget(0, 0)
	l, err := b.reserve(context.Background(), "u", 1<<40, 0)
	if err != nil || l != nil {
		t.Fatalf("lease %v, err %v", l, err)
	}
	l.shrink(1)
	l.release()
}

// BenchmarkBodyBudget is the budget's cost on a body that fits: reserve,
// shrink to the size read, release.
func BenchmarkBodyBudget(b *testing.B) {
	bb := newBodyBudget(defaultBodyMemory, defaultBodyMemoryPerUser*defaultMaxBodyBytes)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := bb.reserve(ctx, "u", 2048, defaultUserWaitTimeout)
		if err != nil {
			b.Fatal(err)
		}
		l.shrink(2000)
		l.release()
	}
}
