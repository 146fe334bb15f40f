package sqlconversation_test

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
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
)

func TestRoundTrip(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, nil)
		mustMiss(t, s, "k1", "resp_1")
		r := record("k1", "resp_1")
		put(t, s, "k1", "resp_1", r)
		mustGet(t, s, "k1", "resp_1", r)
		// Bytes come back as they went in, even ones that are no JSON,
		// and an empty record is a record.
		bare := []byte{0xff, 0x00, '['}
		put(t, s, "k1", "resp_bare", bare)
		mustGet(t, s, "k1", "resp_bare", bare)
		put(t, s, "k1", "resp_empty", nil)
		mustGet(t, s, "k1", "resp_empty", []byte{})
		// The Store keeps no reference to the caller's bytes.
		buf := record("k1", "resp_2")
		put(t, s, "k1", "resp_2", buf)
		want := bytes.Clone(buf)
		buf[0] = 'X'
		mustGet(t, s, "k1", "resp_2", want)
	})
}

// A response id is found, replaced and deleted only under the key that
// made it.
func TestScopedByAPIKey(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, nil)
		ctx := context.Background()
		a := record("key-a", "resp_1")
		put(t, s, "key-a", "resp_1", a)
		mustMiss(t, s, "key-b", "resp_1")
		mustMiss(t, s, "", "resp_1")
		if err := s.Delete(ctx, "key-b", "resp_1"); err != nil {
			t.Fatal(err)
		}
		mustGet(t, s, "key-a", "resp_1", a)

		b := record("key-b", "resp_1")
		put(t, s, "key-b", "resp_1", b)
		mustGet(t, s, "key-a", "resp_1", a)
		mustGet(t, s, "key-b", "resp_1", b)
		if err := s.Delete(ctx, "key-a", "resp_1"); err != nil {
			t.Fatal(err)
		}
		mustMiss(t, s, "key-a", "resp_1")
		mustGet(t, s, "key-b", "resp_1", b)
		if err := s.Delete(ctx, "key-a", "resp_1"); err != nil {
			t.Fatalf("deleting a missing record: %v", err)
		}
	})
}

func TestPutReplaces(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, nil)
		put(t, s, "k", "resp_1", record("k", "resp_1"))
		r := []byte(`{"response_id":"resp_1","account_id":"acct-9"}`)
		put(t, s, "k", "resp_1", r)
		mustGet(t, s, "k", "resp_1", r)
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d, want 1", n)
		}
	})
}

// Get ignores expired rows; a Put renews a record's TTL.
func TestExpiry(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Hour, CleanupInterval: -1, Now: clk.now})
		r := record("k", "resp_1")
		put(t, s, "k", "resp_1", r)
		clk.advance(time.Hour - time.Microsecond)
		mustGet(t, s, "k", "resp_1", r)
		clk.advance(time.Microsecond)
		mustMiss(t, s, "k", "resp_1")
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d; with cleanup off the expired row stays until DeleteExpired", n)
		}
		put(t, s, "k", "resp_1", r)
		clk.advance(59 * time.Minute)
		mustGet(t, s, "k", "resp_1", r)
	})
}

func TestDefaultTTL(t *testing.T) {
	clk := newClock()
	s := sqliteTarget(t).open(t, &sqlconversation.Options{Now: clk.now})
	r := record("k", "resp_1")
	put(t, s, "k", "resp_1", r)
	clk.advance(24*time.Hour - time.Microsecond)
	mustGet(t, s, "k", "resp_1", r)
	clk.advance(time.Microsecond)
	mustMiss(t, s, "k", "resp_1")
}

// Put deletes expired rows at most CleanupLimit at a time, at most once
// per CleanupInterval unless a cleanup found more than it could take.
func TestCleanupIsBounded(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Hour, CleanupInterval: time.Minute, CleanupLimit: 3, Now: clk.now})
		// The first Put cleans (nothing yet) and schedules the next one a
		// minute later.
		for i := range 10 {
			id := fmt.Sprint("old_", i)
			put(t, s, "k", id, record("k", id))
		}
		clk.advance(time.Hour)
		steps := []int64{
			8, // 11 rows, 10 expired: 3 deleted; the limit was hit, so
			6, // the next Put cleans again: 3 more,
			4, // and again,
			4, // the last expired row, below the limit,
			5, // so the next Put within the interval does not clean.
		}
		for i, want := range steps {
			id := fmt.Sprint("new_", i)
			put(t, s, "k", id, record("k", id))
			if n := countRows(t, s); n != want {
				t.Fatalf("after Put %d: rows = %d, want %d", i, n, want)
			}
		}
		for i := range steps {
			mustGet(t, s, "k", fmt.Sprint("new_", i), record("k", fmt.Sprint("new_", i)))
		}
	})
}

func TestDeleteExpired(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Minute, CleanupInterval: -1, CleanupLimit: 4, Now: clk.now})
		for i := range 6 {
			id := fmt.Sprint("r_", i)
			put(t, s, "k", id, record("k", id))
		}
		ctx := context.Background()
		if n, err := s.DeleteExpired(ctx); err != nil || n != 0 {
			t.Fatalf("before expiry: DeleteExpired = %d, %v", n, err)
		}
		clk.advance(time.Minute)
		for _, want := range []int64{4, 2, 0} {
			if n, err := s.DeleteExpired(ctx); err != nil || n != want {
				t.Fatalf("DeleteExpired = %d, %v; want %d", n, err, want)
			}
		}
		if n := countRows(t, s); n != 0 {
			t.Fatalf("rows = %d", n)
		}
	})
}

// Concurrent Puts, Gets and Deletes (run with -race) each get an answer
// that belongs to their own key.
func TestConcurrent(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, &sqlconversation.Options{CleanupInterval: time.Nanosecond})
		ctx := context.Background()
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				key := fmt.Sprint("k", w%2)
				for i := range 50 {
					id := fmt.Sprint("resp_", i%8)
					var err error
					switch i % 3 {
					case 0:
						err = s.Put(ctx, key, id, record(key, id))
					case 1:
						var r []byte
						r, err = s.Get(ctx, key, id)
						if err == nil && !bytes.Equal(r, record(key, id)) {
							t.Errorf("Get(%s, %s) = %.60q, another record", key, id, r)
						}
						if errors.Is(err, conversation.ErrNotFound) {
							err = nil
						}
					case 2:
						err = s.Delete(ctx, key, id)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestOptionsAndDriver(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlconversation.Open(ctx, "mysql", "x", nil); err == nil || !strings.Contains(err.Error(), `unknown driver "mysql"`) {
		t.Fatalf("unknown driver: %v", err)
	}
	if _, err := sqlconversation.Open(ctx, "sqlite", sqliteTarget(t).dsn, &sqlconversation.Options{TTL: -1}); err == nil ||
		!strings.Contains(err.Error(), "negative TTL") {
		t.Fatalf("negative TTL: %v", err)
	}
	if _, err := sqlconversation.OpenSQLite(ctx, " ", nil); err == nil {
		t.Fatal("empty SQLite DSN accepted")
	}
	if _, err := sqlconversation.OpenPostgres(ctx, "", nil); err == nil {
		t.Fatal("empty PostgreSQL URL accepted")
	}
}

// NewSQLite leaves the database to its owner; Close may be called twice.
func TestNewSQLiteKeepsTheDB(t *testing.T) {
	owner := sqliteTarget(t).open(t, nil)
	s, err := sqlconversation.NewSQLite(context.Background(), owner.DB(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "k", "resp_1", record("k", "resp_1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, owner, "k", "resp_1", record("k", "resp_1"))
}

func TestNewPostgresKeepsThePool(t *testing.T) {
	owner := postgresTarget(t).open(t, nil)
	s, err := sqlconversation.NewPostgres(context.Background(), owner.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "k", "resp_1", record("k", "resp_1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustGet(t, owner, "k", "resp_1", record("k", "resp_1"))
}

// Relays starting together all create the table without error.
func TestPostgresConcurrentOpen(t *testing.T) {
	tg := postgresTarget(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := sqlconversation.OpenPostgres(context.Background(), tg.dsn, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

// Ids the client chooses may hold bytes a database column refuses: a Get
// of them is a miss, a Delete a no-op, and the store keeps working.
func TestHostileIDs(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, nil)
		put(t, s, "k", "resp_1", record("k", "resp_1"))
		for _, id := range []string{"resp_\x00", "resp_\xff\xfe", strings.Repeat("r", 64<<10)} {
			mustMiss(t, s, "k", id)
			mustMiss(t, s, id, "resp_1")
			if err := s.Delete(context.Background(), "k", id); err != nil {
				t.Fatalf("Delete(%.20q): %v", id, err)
			}
		}
		mustGet(t, s, "k", "resp_1", record("k", "resp_1"))
	})
}
