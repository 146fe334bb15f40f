package conversation_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/internal/testclock"
)

// newClock is a hand-moved clock for conversation.SetClock.
func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

// memoryAt returns m reading time from clk.
func memoryAt(m *conversation.Memory, clk *testclock.Clock) *conversation.Memory {
	conversation.SetClock(m, clk.Now)
	return m
}

// record returns a record of key and id, shaped like the relay's, whose
// input carries n bytes of text.
func record(key, id string, n int) []byte {
	return []byte(`{"response_id":"` + id + `","api_key_id":"` + key +
		`","model":"gpt-5","account_id":"acct-1","store":true,` +
		`"input":[{"role":"user","content":"` + strings.Repeat("x", n) + `"}],` +
		`"output":[],"created_at":"2026-01-02T03:04:05Z"}`)
}

// size is what Memory counts for a record of key and id: the record, its
// keys and 160 bytes of bookkeeping.
func size(key, id string, rec []byte) int64 {
	return int64(160 + len(key) + len(id) + len(rec))
}

// mustGet fails unless the record of (key, id) is there and is want.
func mustGet(t *testing.T, s conversation.Store, key, id string, want []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", key, id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s, %s) = %.80q, want %.80q", key, id, got, want)
	}
}

// mustMiss fails unless Get of (key, id) says ErrNotFound.
func mustMiss(t *testing.T, s conversation.Store, key, id string) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if !errors.Is(err, conversation.ErrNotFound) || got != nil {
		t.Fatalf("Get(%s, %s) = %.80q, %v; want ErrNotFound", key, id, got, err)
	}
}

func put(t *testing.T, s conversation.Store, key, id string, rec []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, id, rec); err != nil {
		t.Fatalf("Put(%s, %s): %v", key, id, err)
	}
}

func TestMemoryPutGetDelete(t *testing.T) {
	var m conversation.Memory // the zero Memory is ready
	ctx := context.Background()
	mustMiss(t, &m, "k1", "resp_1")
	r := record("k1", "resp_1", 100)
	put(t, &m, "k1", "resp_1", r)
	mustGet(t, &m, "k1", "resp_1", r)
	if got, want := m.Bytes(), size("k1", "resp_1", r); got != want {
		t.Fatalf("Bytes = %d, want %d", got, want)
	}
	mustMiss(t, &m, "k1", "resp_2")
	if err := m.Delete(ctx, "k1", "resp_1"); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, &m, "k1", "resp_1")
	if got := m.Bytes(); got != 0 {
		t.Fatalf("Bytes after Delete = %d", got)
	}
	if err := m.Delete(ctx, "k1", "resp_1"); err != nil {
		t.Fatalf("deleting a missing record: %v", err)
	}
}

// A response id is found only under the key that made it.
func TestMemoryScopedByAPIKey(t *testing.T) {
	m := &conversation.Memory{}
	ctx := context.Background()
	a := record("key-a", "resp_1", 10)
	put(t, m, "key-a", "resp_1", a)
	mustMiss(t, m, "key-b", "resp_1")
	mustMiss(t, m, "", "resp_1")
	// Another key's Delete of the same id leaves the record alone.
	if err := m.Delete(ctx, "key-b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	mustGet(t, m, "key-a", "resp_1", a)

	// The same id under another key is another record.
	b := record("key-b", "resp_1", 20)
	put(t, m, "key-b", "resp_1", b)
	mustGet(t, m, "key-a", "resp_1", a)
	mustGet(t, m, "key-b", "resp_1", b)
	if err := m.Delete(ctx, "key-b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	mustGet(t, m, "key-a", "resp_1", a)
	mustMiss(t, m, "key-b", "resp_1")
	if got, want := m.Bytes(), size("key-a", "resp_1", a); got != want {
		t.Fatalf("Bytes = %d, want %d", got, want)
	}
}

// Keys are compared whole: a key and id whose concatenations agree are
// still two records.
func TestMemoryKeysDoNotRunTogether(t *testing.T) {
	m := &conversation.Memory{}
	a, b := record("ab", "c", 1), record("a", "bc", 2)
	put(t, m, "ab", "c", a)
	put(t, m, "a", "bc", b)
	mustGet(t, m, "ab", "c", a)
	mustGet(t, m, "a", "bc", b)
}

func TestMemoryTTL(t *testing.T) {
	for _, c := range []struct {
		name string
		ttl  time.Duration
		want time.Duration // how long a record lives
	}{
		{"set", time.Hour, time.Hour},
		{"default", 0, 24 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			m := memoryAt(&conversation.Memory{TTL: c.ttl}, clk)
			r := record("k", "resp_1", 10)
			put(t, m, "k", "resp_1", r)
			clk.Advance(c.want - time.Nanosecond)
			mustGet(t, m, "k", "resp_1", r)
			clk.Advance(time.Nanosecond)
			mustMiss(t, m, "k", "resp_1")
			if got := m.Bytes(); got != 0 {
				t.Fatalf("Bytes after expiry = %d", got)
			}
		})
	}
	t.Run("negative keeps until evicted", func(t *testing.T) {
		clk := newClock()
		m := memoryAt(&conversation.Memory{TTL: -1}, clk)
		r := record("k", "resp_1", 10)
		put(t, m, "k", "resp_1", r)
		clk.Advance(10 * 365 * 24 * time.Hour)
		mustGet(t, m, "k", "resp_1", r)
	})
}

// Expired records that nobody asks for again are reclaimed by later Puts.
func TestMemoryPutReclaimsExpired(t *testing.T) {
	clk := newClock()
	m := memoryAt(&conversation.Memory{TTL: time.Minute}, clk)
	for i := range 10 {
		id := fmt.Sprint("old_", i)
		put(t, m, "k", id, record("k", id, 100))
	}
	clk.Advance(time.Minute)
	fresh := record("k", "fresh", 100)
	put(t, m, "k", "fresh", fresh)
	if got, want := m.Bytes(), size("k", "fresh", fresh); got != want {
		t.Fatalf("Bytes = %d, want only the fresh record's %d", got, want)
	}
	// A record is timed from its last Put.
	clk.Advance(59 * time.Second)
	again := record("k", "fresh", 101)
	put(t, m, "k", "fresh", again)
	clk.Advance(59 * time.Second)
	mustGet(t, m, "k", "fresh", again)
}

func TestMemoryMaxBytesEvictsOldestFirst(t *testing.T) {
	id := func(i int) string { return fmt.Sprintf("resp_%03d", i) }
	sz := size("k", id(0), record("k", id(0), 1000))
	const keep = 10
	m := &conversation.Memory{MaxBytes: keep*sz + sz/2}
	recs := make([][]byte, 100)
	for i := range recs {
		recs[i] = record("k", id(i), 1000)
		put(t, m, "k", id(i), recs[i])
		if got := m.Bytes(); got > m.MaxBytes {
			t.Fatalf("after %d Puts Bytes = %d > MaxBytes %d", i+1, got, m.MaxBytes)
		}
		if want := int64(min(i+1, keep)) * sz; m.Bytes() != want {
			t.Fatalf("after %d Puts Bytes = %d, want %d", i+1, m.Bytes(), want)
		}
	}
	for i, r := range recs {
		if i < len(recs)-keep {
			mustMiss(t, m, "k", id(i))
		} else {
			mustGet(t, m, "k", id(i), r)
		}
	}
}

// Put makes a record the newest again: eviction follows Put order.
func TestMemoryReplaceIsNewest(t *testing.T) {
	m := &conversation.Memory{MaxBytes: 3 * size("k", "a", record("k", "a", 100))}
	for _, id := range []string{"a", "b", "c"} {
		put(t, m, "k", id, record("k", id, 100))
	}
	a := record("k", "a", 100)
	put(t, m, "k", "a", a)
	d := record("k", "d", 100)
	put(t, m, "k", "d", d)
	mustMiss(t, m, "k", "b")
	mustGet(t, m, "k", "a", a)
	mustGet(t, m, "k", "d", d)
}

func TestMemoryReplaceAdjustsBytes(t *testing.T) {
	m := &conversation.Memory{}
	small, big := record("k", "resp_1", 10), record("k", "resp_1", 5000)
	put(t, m, "k", "resp_1", small)
	put(t, m, "k", "resp_1", big)
	if got, want := m.Bytes(), size("k", "resp_1", big); got != want {
		t.Fatalf("Bytes after growing = %d, want %d", got, want)
	}
	mustGet(t, m, "k", "resp_1", big)
	put(t, m, "k", "resp_1", small)
	if got, want := m.Bytes(), size("k", "resp_1", small); got != want {
		t.Fatalf("Bytes after shrinking = %d, want %d", got, want)
	}
	mustGet(t, m, "k", "resp_1", small)
}

// A record larger than MaxBytes is refused and costs the others nothing;
// one replacing a kept record drops the stale one.
func TestMemoryRecordLargerThanCap(t *testing.T) {
	kept := record("k", "kept", 100)
	m := &conversation.Memory{MaxBytes: 2 * size("k", "kept", kept)}
	put(t, m, "k", "kept", kept)
	put(t, m, "k", "huge", record("k", "huge", int(m.MaxBytes)))
	mustMiss(t, m, "k", "huge")
	mustGet(t, m, "k", "kept", kept)
	if got, want := m.Bytes(), size("k", "kept", kept); got != want {
		t.Fatalf("Bytes = %d, want %d", got, want)
	}
	put(t, m, "k", "kept", record("k", "kept", int(m.MaxBytes)))
	mustMiss(t, m, "k", "kept")
	if got := m.Bytes(); got != 0 {
		t.Fatalf("Bytes = %d, want 0", got)
	}
}

// Keys count toward the cap: a tiny record under a hostile 1 MiB key is
// refused by a smaller cap.
func TestMemoryHostileKeySize(t *testing.T) {
	m := &conversation.Memory{MaxBytes: 64 << 10}
	long := strings.Repeat("k", 1<<20)
	put(t, m, long, "resp_1", []byte(`{}`))
	put(t, m, "k", long, []byte(`{}`))
	mustMiss(t, m, long, "resp_1")
	mustMiss(t, m, "k", long)
	if got := m.Bytes(); got != 0 {
		t.Fatalf("Bytes = %d, want 0", got)
	}
}

// A hostile 10 MiB record against a 1 MiB cap is refused without the
// store growing or copying it.
func TestMemoryHostileSize(t *testing.T) {
	m := &conversation.Memory{MaxBytes: 1 << 20}
	small := record("k", "small", 100)
	put(t, m, "k", "small", small)
	huge := record("k", "huge", 10<<20)
	allocs := testing.AllocsPerRun(10, func() {
		if err := m.Put(context.Background(), "k", "huge", huge); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("refusing the record allocated %v times per Put", allocs)
	}
	mustMiss(t, m, "k", "huge")
	mustGet(t, m, "k", "small", small)
	if got, want := m.Bytes(), size("k", "small", small); got != want {
		t.Fatalf("Bytes = %d, want %d", got, want)
	}
}

func TestMemoryNegativeMaxBytesKeepsNothing(t *testing.T) {
	m := &conversation.Memory{MaxBytes: -1}
	put(t, m, "k", "resp_1", record("k", "resp_1", 10))
	put(t, m, "k", "resp_2", nil)
	mustMiss(t, m, "k", "resp_1")
	mustMiss(t, m, "k", "resp_2")
	if got := m.Bytes(); got != 0 {
		t.Fatalf("Bytes = %d", got)
	}
	if err := m.Delete(context.Background(), "k", "resp_1"); err != nil {
		t.Fatal(err)
	}
}

// Concurrent Puts, Gets and Deletes under a small cap (run with -race):
// the cap holds, Get never returns another key's or id's record, and
// Bytes is exactly the size of the records still found.
func TestMemoryConcurrent(t *testing.T) {
	const (
		workers = 8
		ops     = 2000
		ids     = 64
	)
	m := &conversation.Memory{MaxBytes: 20 * size("k0", "resp_00", record("k0", "resp_00", 200)), TTL: -1}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprint("k", w%2)
			for i := range ops {
				id := fmt.Sprintf("resp_%02d", (i*7+w)%ids)
				switch i % 4 {
				case 0, 1:
					if err := m.Put(ctx, key, id, record(key, id, 200)); err != nil {
						t.Error(err)
						return
					}
				case 2:
					r, err := m.Get(ctx, key, id)
					if err == nil && !bytes.Equal(r, record(key, id, 200)) {
						t.Errorf("Get(%s, %s) = %.80q", key, id, r)
						return
					}
					if err != nil && !errors.Is(err, conversation.ErrNotFound) {
						t.Error(err)
						return
					}
				case 3:
					if err := m.Delete(ctx, key, id); err != nil {
						t.Error(err)
						return
					}
				}
				if b := m.Bytes(); b > m.MaxBytes || b < 0 {
					t.Errorf("Bytes = %d, cap %d", b, m.MaxBytes)
					return
				}
			}
		})
	}
	wg.Wait()
	var found int64
	for k := range 2 {
		key := fmt.Sprint("k", k)
		for i := range ids {
			id := fmt.Sprintf("resp_%02d", i)
			if r, err := m.Get(ctx, key, id); err == nil {
				found += size(key, id, r)
			}
		}
	}
	if got := m.Bytes(); got != found {
		t.Fatalf("Bytes = %d, but the records found hold %d", got, found)
	}
}
