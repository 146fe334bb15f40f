package conversation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
)

// clock is a hand-moved Memory.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// record returns a record of key and id whose input carries n bytes of
// text.
func record(key, id string, n int) *conversation.Record {
	return &conversation.Record{
		ResponseID: id,
		APIKeyID:   key,
		Model:      "gpt-5",
		AccountID:  "acct-1",
		Input:      json.RawMessage(`[{"role":"user","content":"` + strings.Repeat("x", n) + `"}]`),
		Output:     json.RawMessage(`[]`),
		CreatedAt:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// mustGet fails unless the record of (key, id) is there and is want.
func mustGet(t *testing.T, s conversation.Store, key, id string, want *conversation.Record) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", key, id, err)
	}
	if got != want {
		t.Fatalf("Get(%s, %s) = %+v, want %+v", key, id, got, want)
	}
}

// mustMiss fails unless Get of (key, id) says ErrNotFound.
func mustMiss(t *testing.T, s conversation.Store, key, id string) {
	t.Helper()
	got, err := s.Get(context.Background(), key, id)
	if !errors.Is(err, conversation.ErrNotFound) || got != nil {
		t.Fatalf("Get(%s, %s) = %v, %v; want ErrNotFound", key, id, got, err)
	}
}

func put(t *testing.T, s conversation.Store, r *conversation.Record) {
	t.Helper()
	if err := s.Put(context.Background(), r); err != nil {
		t.Fatalf("Put(%s, %s): %v", r.APIKeyID, r.ResponseID, err)
	}
}

func TestMemoryPutGetDelete(t *testing.T) {
	var m conversation.Memory // the zero Memory is ready
	ctx := context.Background()
	mustMiss(t, &m, "k1", "resp_1")
	r := record("k1", "resp_1", 100)
	put(t, &m, r)
	mustGet(t, &m, "k1", "resp_1", r)
	if got := m.Bytes(); got != r.Size() {
		t.Fatalf("Bytes = %d, want %d", got, r.Size())
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
	put(t, m, a)
	mustMiss(t, m, "key-b", "resp_1")
	mustMiss(t, m, "", "resp_1")
	// Another key's Delete of the same id leaves the record alone.
	if err := m.Delete(ctx, "key-b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	mustGet(t, m, "key-a", "resp_1", a)

	// The same id under another key is another record.
	b := record("key-b", "resp_1", 20)
	put(t, m, b)
	mustGet(t, m, "key-a", "resp_1", a)
	mustGet(t, m, "key-b", "resp_1", b)
	if err := m.Delete(ctx, "key-b", "resp_1"); err != nil {
		t.Fatal(err)
	}
	mustGet(t, m, "key-a", "resp_1", a)
	mustMiss(t, m, "key-b", "resp_1")
	if got := m.Bytes(); got != a.Size() {
		t.Fatalf("Bytes = %d, want %d", got, a.Size())
	}
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
			m := &conversation.Memory{TTL: c.ttl, Now: clk.now}
			r := record("k", "resp_1", 10)
			put(t, m, r)
			clk.advance(c.want - time.Nanosecond)
			mustGet(t, m, "k", "resp_1", r)
			clk.advance(time.Nanosecond)
			mustMiss(t, m, "k", "resp_1")
			if got := m.Bytes(); got != 0 {
				t.Fatalf("Bytes after expiry = %d", got)
			}
		})
	}
	t.Run("negative keeps until evicted", func(t *testing.T) {
		clk := newClock()
		m := &conversation.Memory{TTL: -1, Now: clk.now}
		r := record("k", "resp_1", 10)
		put(t, m, r)
		clk.advance(10 * 365 * 24 * time.Hour)
		mustGet(t, m, "k", "resp_1", r)
	})
}

// Expired records that nobody asks for again are reclaimed by later Puts.
func TestMemoryPutReclaimsExpired(t *testing.T) {
	clk := newClock()
	m := &conversation.Memory{TTL: time.Minute, Now: clk.now}
	for i := range 10 {
		put(t, m, record("k", fmt.Sprint("old_", i), 100))
	}
	clk.advance(time.Minute)
	fresh := record("k", "fresh", 100)
	put(t, m, fresh)
	if got := m.Bytes(); got != fresh.Size() {
		t.Fatalf("Bytes = %d, want only the fresh record's %d", got, fresh.Size())
	}
	// A record is timed from its last Put.
	clk.advance(59 * time.Second)
	again := record("k", "fresh", 100)
	put(t, m, again)
	clk.advance(59 * time.Second)
	mustGet(t, m, "k", "fresh", again)
}

func TestMemoryMaxBytesEvictsOldestFirst(t *testing.T) {
	size := record("k", "resp_000", 1000).Size()
	const keep = 10
	m := &conversation.Memory{MaxBytes: keep*size + size/2}
	recs := make([]*conversation.Record, 100)
	for i := range recs {
		recs[i] = record("k", fmt.Sprintf("resp_%03d", i), 1000)
		put(t, m, recs[i])
		if got := m.Bytes(); got > m.MaxBytes {
			t.Fatalf("after %d Puts Bytes = %d > MaxBytes %d", i+1, got, m.MaxBytes)
		}
		if want := int64(min(i+1, keep)) * size; m.Bytes() != want {
			t.Fatalf("after %d Puts Bytes = %d, want %d", i+1, m.Bytes(), want)
		}
	}
	for i, r := range recs {
		if i < len(recs)-keep {
			mustMiss(t, m, "k", r.ResponseID)
		} else {
			mustGet(t, m, "k", r.ResponseID, r)
		}
	}
}

// Put makes a record the newest again: eviction follows Put order.
func TestMemoryReplaceIsNewest(t *testing.T) {
	size := record("k", "a", 100).Size()
	m := &conversation.Memory{MaxBytes: 3 * size}
	for _, id := range []string{"a", "b", "c"} {
		put(t, m, record("k", id, 100))
	}
	a := record("k", "a", 100)
	put(t, m, a)
	d := record("k", "d", 100)
	put(t, m, d)
	mustMiss(t, m, "k", "b")
	mustGet(t, m, "k", "a", a)
	mustGet(t, m, "k", "d", d)
}

func TestMemoryReplaceAdjustsBytes(t *testing.T) {
	m := &conversation.Memory{}
	small, big := record("k", "resp_1", 10), record("k", "resp_1", 5000)
	put(t, m, small)
	put(t, m, big)
	if got := m.Bytes(); got != big.Size() {
		t.Fatalf("Bytes after growing = %d, want %d", got, big.Size())
	}
	mustGet(t, m, "k", "resp_1", big)
	put(t, m, small)
	if got := m.Bytes(); got != small.Size() {
		t.Fatalf("Bytes after shrinking = %d, want %d", got, small.Size())
	}
	mustGet(t, m, "k", "resp_1", small)
}

// A record larger than MaxBytes is refused and costs the others nothing;
// one replacing a kept record drops the stale one.
func TestMemoryRecordLargerThanCap(t *testing.T) {
	kept := record("k", "kept", 100)
	m := &conversation.Memory{MaxBytes: 2 * kept.Size()}
	put(t, m, kept)
	put(t, m, record("k", "huge", int(m.MaxBytes)))
	mustMiss(t, m, "k", "huge")
	mustGet(t, m, "k", "kept", kept)
	if got := m.Bytes(); got != kept.Size() {
		t.Fatalf("Bytes = %d, want %d", got, kept.Size())
	}
	put(t, m, record("k", "kept", int(m.MaxBytes)))
	mustMiss(t, m, "k", "kept")
	if got := m.Bytes(); got != 0 {
		t.Fatalf("Bytes = %d, want 0", got)
	}
}

// A hostile 10 MiB record against a 1 MiB cap is refused without the
// store growing or copying it.
func TestMemoryHostileSize(t *testing.T) {
	m := &conversation.Memory{MaxBytes: 1 << 20}
	small := record("k", "small", 100)
	put(t, m, small)
	huge := record("k", "huge", 10<<20)
	allocs := testing.AllocsPerRun(10, func() {
		if err := m.Put(context.Background(), huge); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("refusing the record allocated %v times per Put", allocs)
	}
	mustMiss(t, m, "k", "huge")
	mustGet(t, m, "k", "small", small)
	if got := m.Bytes(); got != small.Size() {
		t.Fatalf("Bytes = %d, want %d", got, small.Size())
	}
}

func TestMemoryNegativeMaxBytesKeepsNothing(t *testing.T) {
	m := &conversation.Memory{MaxBytes: -1}
	put(t, m, record("k", "resp_1", 10))
	put(t, m, &conversation.Record{APIKeyID: "k", ResponseID: "resp_2"})
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
// the cap holds, and Bytes is exactly the size of the records still
// found.
func TestMemoryConcurrent(t *testing.T) {
	const (
		workers = 8
		ops     = 2000
		ids     = 64
	)
	size := record("k0", "resp_00", 200).Size()
	m := &conversation.Memory{MaxBytes: 20 * size, TTL: -1}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprint("k", w%2)
			for i := range ops {
				id := fmt.Sprintf("resp_%02d", (i*7+w)%ids)
				switch i % 4 {
				case 0, 1:
					if err := m.Put(ctx, record(key, id, 200)); err != nil {
						t.Error(err)
						return
					}
				case 2:
					r, err := m.Get(ctx, key, id)
					if err == nil && (r.APIKeyID != key || r.ResponseID != id) {
						t.Errorf("Get(%s, %s) = record of (%s, %s)", key, id, r.APIKeyID, r.ResponseID)
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
		for i := range ids {
			if r, err := m.Get(ctx, fmt.Sprint("k", k), fmt.Sprintf("resp_%02d", i)); err == nil {
				found += r.Size()
			}
		}
	}
	if got := m.Bytes(); got != found {
		t.Fatalf("Bytes = %d, but the records found hold %d", got, found)
	}
}

func TestRecordSize(t *testing.T) {
	r := &conversation.Record{ResponseID: "resp", APIKeyID: "key", Input: json.RawMessage(`[]`)}
	base := r.Size()
	r.Output = json.RawMessage(strings.Repeat("x", 1000))
	if got := r.Size() - base; got != 1000 {
		t.Fatalf("1000 bytes of output add %d to Size", got)
	}
}
