package sqlconversation_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/convtest"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
)

// Every driver passes the conformance suite, with a cleanup on every Put
// so that it runs alongside the other operations.
func TestConformance(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		convtest.Run(t, func(t *testing.T) conversation.Store {
			return tg.open(t, &sqlconversation.Options{CleanupInterval: time.Nanosecond})
		})
	})
}

func TestPutReplaces(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t, nil)
		convtest.Put(t, s, "k", "resp_1", convtest.Record("k", "resp_1"))
		r := []byte(`{"response_id":"resp_1","account_id":"acct-9"}`)
		convtest.Put(t, s, "k", "resp_1", r)
		convtest.MustGet(t, s, "k", "resp_1", r)
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d, want 1", n)
		}
	})
}

// Get ignores expired rows; a Put renews a record's TTL.
func TestExpiry(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Hour, CleanupInterval: -1, Now: clk.Now})
		r := convtest.Record("k", "resp_1")
		convtest.Put(t, s, "k", "resp_1", r)
		clk.Advance(time.Hour - time.Microsecond)
		convtest.MustGet(t, s, "k", "resp_1", r)
		clk.Advance(time.Microsecond)
		convtest.MustMiss(t, s, "k", "resp_1")
		if n := countRows(t, s); n != 1 {
			t.Fatalf("rows = %d; with cleanup off the expired row stays until DeleteExpired", n)
		}
		convtest.Put(t, s, "k", "resp_1", r)
		clk.Advance(59 * time.Minute)
		convtest.MustGet(t, s, "k", "resp_1", r)
	})
}

func TestDefaultTTL(t *testing.T) {
	clk := newClock()
	s := sqliteTarget(t).open(t, &sqlconversation.Options{Now: clk.Now})
	r := convtest.Record("k", "resp_1")
	convtest.Put(t, s, "k", "resp_1", r)
	clk.Advance(24*time.Hour - time.Microsecond)
	convtest.MustGet(t, s, "k", "resp_1", r)
	clk.Advance(time.Microsecond)
	convtest.MustMiss(t, s, "k", "resp_1")
}

// Put deletes expired rows at most CleanupLimit at a time, at most once
// per CleanupInterval unless a cleanup found more than it could take.
func TestCleanupIsBounded(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Hour, CleanupInterval: time.Minute, CleanupLimit: 3, Now: clk.Now})
		// The first Put cleans (nothing yet) and schedules the next one a
		// minute later.
		for i := range 10 {
			id := fmt.Sprint("old_", i)
			convtest.Put(t, s, "k", id, convtest.Record("k", id))
		}
		clk.Advance(time.Hour)
		steps := []int64{
			8, // 11 rows, 10 expired: 3 deleted; the limit was hit, so
			6, // the next Put cleans again: 3 more,
			4, // and again,
			4, // the last expired row, below the limit,
			5, // so the next Put within the interval does not clean.
		}
		for i, want := range steps {
			id := fmt.Sprint("new_", i)
			convtest.Put(t, s, "k", id, convtest.Record("k", id))
			if n := countRows(t, s); n != want {
				t.Fatalf("after Put %d: rows = %d, want %d", i, n, want)
			}
		}
		for i := range steps {
			convtest.MustGet(t, s, "k", fmt.Sprint("new_", i), convtest.Record("k", fmt.Sprint("new_", i)))
		}
	})
}

func TestDeleteExpired(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clk := newClock()
		s := tg.open(t, &sqlconversation.Options{TTL: time.Minute, CleanupInterval: -1, CleanupLimit: 4, Now: clk.Now})
		for i := range 6 {
			id := fmt.Sprint("r_", i)
			convtest.Put(t, s, "k", id, convtest.Record("k", id))
		}
		ctx := context.Background()
		if n, err := s.DeleteExpired(ctx); err != nil || n != 0 {
			t.Fatalf("before expiry: DeleteExpired = %d, %v", n, err)
		}
		clk.Advance(time.Minute)
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

func TestOptionsAndDriver(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlconversation.Open(ctx, "mysql", "x", nil); err == nil || !strings.Contains(err.Error(), `unknown driver "mysql"`) {
		t.Fatalf("unknown driver: %v", err)
	}
	if _, err := sqlconversation.Open(ctx, "sqlite", sqliteTarget(t).DSN, &sqlconversation.Options{TTL: -1}); err == nil ||
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
	convtest.Put(t, s, "k", "resp_1", convtest.Record("k", "resp_1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	convtest.MustGet(t, owner, "k", "resp_1", convtest.Record("k", "resp_1"))
}

func TestNewPostgresKeepsThePool(t *testing.T) {
	owner := postgresTarget(t).open(t, nil)
	s, err := sqlconversation.NewPostgres(context.Background(), owner.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	convtest.Put(t, s, "k", "resp_1", convtest.Record("k", "resp_1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	convtest.MustGet(t, owner, "k", "resp_1", convtest.Record("k", "resp_1"))
}

// Relays starting together all create the table without error.
func TestPostgresConcurrentOpen(t *testing.T) {
	tg := postgresTarget(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := sqlconversation.OpenPostgres(context.Background(), tg.DSN, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}
