package scheduler

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	s := newMemoryStore(memoryStoreMaxKeys, c.Now)

	if _, ok, err := s.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("empty store: ok %v, err %v", ok, err)
	}
	if err := s.Set(ctx, "k", "v1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "forever", "v", 0); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Get(ctx, "k"); !ok || v != "v1" {
		t.Fatalf("got %q, %v", v, ok)
	}
	if err := s.Set(ctx, "k", "v2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := s.Get(ctx, "k"); v != "v2" {
		t.Fatalf("overwrite: got %q", v)
	}

	c.Advance(time.Minute - time.Nanosecond)
	if _, ok, _ := s.Get(ctx, "k"); !ok {
		t.Fatal("expired early")
	}
	c.Advance(time.Nanosecond)
	if _, ok, _ := s.Get(ctx, "k"); ok {
		t.Fatal("not expired after its TTL")
	}
	if s.len() != 1 {
		t.Fatalf("the expired key was not dropped on read: %d keys", s.len())
	}
	c.Advance(1000 * time.Hour)
	if v, ok, _ := s.Get(ctx, "forever"); !ok || v != "v" {
		t.Fatal("a key without TTL expired")
	}

	if err := s.Delete(ctx, "forever"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, "forever"); ok {
		t.Fatal("deleted key still there")
	}
	if err := s.Delete(ctx, "never-set"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
}

// TestMemoryStoreSweeps checks that keys nobody reads again still go once
// expired, without a background goroutine.
func TestMemoryStoreSweeps(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	s := newMemoryStore(memoryStoreMaxKeys, c.Now)
	for i := range 10000 {
		_ = s.Set(ctx, fmt.Sprint("old", i), "v", time.Minute)
	}
	c.Advance(time.Hour)
	for i := range 10000 {
		_ = s.Set(ctx, fmt.Sprint("new", i), "v", 24*time.Hour)
	}
	// Each Set looks at 4 keys: far fewer than the 10 000 dead ones remain.
	if n := s.len(); n > 10500 {
		t.Fatalf("%d keys held, most of the 10 000 expired ones should be gone", n)
	}
	for i := range 10000 {
		if _, ok, _ := s.Get(ctx, fmt.Sprint("new", i)); !ok {
			t.Fatalf("live key new%d was swept", i)
		}
	}
}

func TestMemoryStoreBounded(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	const max = 64 * memShards
	s := newMemoryStore(max, c.Now)
	for i := range 10 * max {
		c.Advance(time.Millisecond)
		_ = s.Set(ctx, fmt.Sprint("k", i), "v", time.Hour)
		if n := s.len(); n > max {
			t.Fatalf("%d keys after %d sets, cap %d", n, i+1, max)
		}
	}
	// The newest key is never the one evicted.
	last := fmt.Sprint("k", 10*max-1)
	if _, ok, _ := s.Get(ctx, last); !ok {
		t.Fatal("the key just set was evicted")
	}
	// Keys written longest ago go first: the oldest are mostly gone.
	old := 0
	for i := range max {
		if _, ok, _ := s.Get(ctx, fmt.Sprint("k", i)); ok {
			old++
		}
	}
	if old > max/4 {
		t.Fatalf("%d of the %d oldest keys survived eviction", old, max)
	}
}

func TestMemoryStoreConcurrent(t *testing.T) {
	ctx := context.Background()
	s := newMemoryStore(memoryStoreMaxKeys, time.Now)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := fmt.Sprint("k", (w*7+i)%500)
				_ = s.Set(ctx, k, fmt.Sprint(w), time.Minute)
				if v, ok, _ := s.Get(ctx, k); ok && v == "" {
					t.Error("empty value")
				}
				if i%10 == 0 {
					_ = s.Delete(ctx, k)
				}
			}
		})
	}
	wg.Wait()
	if n := s.len(); n > 500 {
		t.Fatalf("%d keys from 500 names", n)
	}
}

// TestMemoryStoreEvictsOldestWritten: when full, owner records written long
// ago go before fresh bindings that expire sooner.
func TestMemoryStoreEvictsOldestWritten(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	const max = 64 * memShards
	s := newMemoryStore(max, c.Now)
	for i := range max {
		_ = s.Set(ctx, fmt.Sprint("owner", i), "v", 30*24*time.Hour)
	}
	c.Advance(24 * time.Hour)
	for i := range max {
		_ = s.Set(ctx, fmt.Sprint("fresh", i), "v", time.Hour)
	}
	fresh := 0
	for i := range max {
		if _, ok, _ := s.Get(ctx, fmt.Sprint("fresh", i)); ok {
			fresh++
		}
	}
	if fresh < max*3/4 {
		t.Fatalf("only %d of the %d fresh keys survived; the old long-lived ones should go first", fresh, max)
	}
}
