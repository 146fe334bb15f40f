package sqlledger_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/ledgercheck"
	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlledger"
	"github.com/relaykit/responsesrelay/internal/ledgertest"
)

var _ billing.Ledger = (*sqlledger.Ledger)(nil)

// The conformance suite every billing.Ledger runs, on both drivers: each
// case opens a Ledger of its own on one database (the suite's ids are
// unique to its run), and the shared cases two.
func TestConformance(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		open := func(t *testing.T) billing.Ledger { return tg.open(t, nil) }
		ledgertest.Run(t, open, ledgertest.Options{
			Shared:  func(t *testing.T) (a, b billing.Ledger) { return open(t), open(t) },
			HoldTTL: time.Hour,
			// Expiry is judged by the turns' start times: no clock to move.
			Advance: func(billing.Ledger, time.Duration) {},
		})
	})
}

func TestBehaviourSQLite(t *testing.T)   { ledgercheck.Run(t, instances(sqliteTarget)) }
func TestBehaviourPostgres(t *testing.T) { ledgercheck.Run(t, instances(postgresTarget)) }

// 50 holds at once from two Ledgers (two relays: connections of their
// own) on one database, with a budget that covers five: five pass, and
// what they spend is the budget.
func TestConcurrentNoOverspend(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { ledgercheck.ConcurrentBudget(t, instances(sqliteTarget)(t), 50) })
	t.Run("postgres", func(t *testing.T) { ledgercheck.ConcurrentBudget(t, instances(postgresTarget)(t), 50) })
}

// A new Ledger on the same database (a restarted relay) sees what was
// spent, the holds in flight, the minute's counts and the settled ids.
func TestRestart(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		lim := billing.Limits{BudgetMicros: 1000, RPM: 3, TPM: 500}
		a := tg.open(t, nil)
		ledgercheck.MustHold(t, a, ledgercheck.Req("spent", 300, 100, lim))
		ledgercheck.MustSettle(t, a, ledgercheck.Use("spent", 300, 100))
		ledgercheck.MustHold(t, a, ledgercheck.Req("held", 400, 100, lim))
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}

		b := tg.open(t, nil)
		r := ledgercheck.MustHold(t, b, ledgercheck.Req("new", 100, 100, lim))
		want := billing.Remaining{Requests: 0, Tokens: 200, BudgetMicros: 200}
		if r != want {
			t.Fatalf("after restart %+v, want %+v", r, want)
		}
		// The settled id is remembered: its replay debits nothing.
		ledgercheck.MustSettle(t, b, ledgercheck.Use("spent", 300, 100))
		// The hold from before the restart settles and corrects its tokens.
		ledgercheck.MustSettle(t, b, ledgercheck.Use("held", 350, 50))
		q := ledgercheck.Req("next", 0, 0, lim)
		q.Now = q.Now.Add(30 * time.Second) // the next minute
		if r := ledgercheck.MustHold(t, b, q); r.BudgetMicros != 250 {
			t.Fatalf("after settling, %d left, want 250", r.BudgetMicros)
		}
	})
}

// Expired holds and old settled ids are deleted: by a Hold once per
// CleanupInterval, a bounded batch at a time, and by DeleteExpired.
func TestDeleteExpired(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		clock := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
		now := func() time.Time { return clock }
		l := tg.open(t, &sqlledger.Options{HoldTTL: time.Minute, SettledTTL: time.Hour, CleanupLimit: 2, Now: now})
		lim := billing.Limits{BudgetMicros: 1000}
		for _, id := range []string{"a", "b", "c"} {
			ledgercheck.MustHold(t, l, ledgercheck.Req(id, 100, 0, lim))
		}
		ledgercheck.MustSettle(t, l, ledgercheck.Use("s1", 1, 0))
		ledgercheck.MustSettle(t, l, ledgercheck.Use("s2", 1, 0))
		if n := count(t, l, "ledger_holds"); n != 3 {
			t.Fatalf("%d holds, want 3", n)
		}
		// A minute later by the turns' clock: a, b and c have expired. The
		// first Hold of the run cleaned up already (nothing then); the next
		// cleanup is due a CleanupInterval later by the Ledger's clock.
		q := ledgercheck.Req("d", 100, 0, lim)
		q.Now = ledgercheck.T0.Add(time.Minute)
		if r := ledgercheck.MustHold(t, l, q); r.BudgetMicros != 898 {
			t.Fatalf("%d left, want 898 (2 spent, d held): expired holds count nothing", r.BudgetMicros)
		}
		if n := count(t, l, "ledger_holds"); n != 4 {
			t.Fatalf("%d holds before the cleanup is due, want 4", n)
		}
		clock = clock.Add(time.Minute)
		q.RequestID = "e"
		ledgercheck.MustHold(t, l, q)
		if n := count(t, l, "ledger_holds"); n != 3 {
			t.Fatalf("%d holds after one cleanup of at most 2, want 3", n)
		}
		// A full batch: the next Hold goes on at once.
		q.RequestID = "f"
		ledgercheck.MustHold(t, l, q)
		if n := count(t, l, "ledger_holds"); n != 3 {
			t.Fatalf("%d holds, want d, e and f", n)
		}
		if n := count(t, l, "ledger_settled"); n != 2 {
			t.Fatalf("%d settled ids, want 2 (not an hour old)", n)
		}
		clock = clock.Add(time.Hour)
		n, err := l.DeleteExpired(context.Background(), q.Now)
		if err != nil || n != 2 {
			t.Fatalf("DeleteExpired = %d, %v; want the 2 settled ids", n, err)
		}
		if n := count(t, l, "ledger_settled"); n != 0 {
			t.Fatalf("%d settled ids left", n)
		}
	})
}

// Ids PostgreSQL text cannot hold are stored with U+FFFD, the same way
// every time: a hold and its settlement still meet.
func TestHostileIDs(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		l := tg.open(t, nil)
		lim := billing.Limits{BudgetMicros: 1000}
		q := billing.Request{RequestID: "req\x00\xff", APIKeyID: "k\x00", UserID: "u\xfe", HoldMicros: 600, KeyLimits: lim, Now: ledgercheck.T0}
		ledgercheck.MustHold(t, l, q)
		ledgercheck.MustSettle(t, l, billing.Usage{RequestID: q.RequestID, APIKeyID: q.APIKeyID, UserID: q.UserID, CostMicros: 500, CreatedAt: q.Now})
		if n := count(t, l, "ledger_holds"); n != 0 {
			t.Fatalf("%d holds after Settle", n)
		}
		q.RequestID, q.HoldMicros = "next", 500
		if r := ledgercheck.MustHold(t, l, q); r.BudgetMicros != 0 {
			t.Fatalf("%d left, want 0 (500 spent, 500 held)", r.BudgetMicros)
		}
		long := strings.Repeat("x", 10000)
		ledgercheck.MustHold(t, l, billing.Request{RequestID: long, APIKeyID: long, Now: ledgercheck.T0})
		ledgercheck.MustRelease(t, l, long)
	})
}

// The tables are where the package documentation says, with what it says.
func TestTables(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		l := tg.open(t, nil)
		ledgercheck.MustHold(t, l, ledgercheck.Req("a", 300, 70, billing.Limits{TPM: 1000}))
		pool, db := l.Pool(), l.DB()
		if n := sqltest.QueryInt(t, pool, db, `SELECT micros FROM ledger_holds WHERE request_id = 'a' AND api_key_id = 'k-1' AND user_id = 'u-1'`); n != 300 {
			t.Fatalf("hold micros %d", n)
		}
		ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 250, 90))
		for _, p := range []string{"total", "2026-03-10", "2026-03"} {
			for _, s := range []string{"key", "user"} {
				n := sqltest.QueryInt(t, pool, db, `SELECT micros FROM ledger_spend WHERE scope = $1 AND period = $2`, s, p)
				if n != 250 {
					t.Errorf("%s spend in %s = %d, want 250", s, p, n)
				}
			}
		}
		if n := sqltest.QueryInt(t, pool, db, `SELECT tokens FROM ledger_rates WHERE scope = 'key' AND scope_id = 'k-1'`); n != 90 {
			t.Errorf("minute tokens %d, want 90 (the turn's)", n)
		}
		if n := count(t, l, "ledger_settled"); n != 1 {
			t.Errorf("%d settled ids", n)
		}
	})
}

// A call whose context has ended fails without a Denial (the relay
// answers 503) and leaves no transaction open: the next call works, on
// the same connections.
func TestCanceledContext(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		l := tg.open(t, nil)
		lim := billing.Limits{BudgetMicros: 1000}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for range 3 {
			_, err := l.Hold(ctx, ledgercheck.Req("a", 100, 0, lim))
			if _, denied := errors.AsType[*billing.Denial](err); err == nil || denied {
				t.Fatalf("Hold with an ended context: %v", err)
			}
			if err := l.Settle(ctx, ledgercheck.Use("a", 100, 0)); err == nil {
				t.Fatal("Settle with an ended context succeeded")
			}
		}
		if r := ledgercheck.MustHold(t, l, ledgercheck.Req("a", 100, 0, lim)); r.BudgetMicros != 900 {
			t.Fatalf("%d left, want 900: the failed calls counted something", r.BudgetMicros)
		}
		ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 100, 0))
		if n := count(t, l, "ledger_settled"); n != 1 {
			t.Fatalf("%d settled ids", n)
		}
	})
}

// A database that is gone fails every call with an error, never a
// Denial: the relay refuses the turn with 503 (fail closed), and a
// Settle is retried by the spool.
func TestDatabaseGone(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		l := tg.open(t, nil)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		_, err := l.Hold(ctx, ledgercheck.Req("a", 1, 1, billing.Limits{}))
		if _, denied := errors.AsType[*billing.Denial](err); err == nil || denied {
			t.Fatalf("Hold: %v", err)
		}
		if err := l.Settle(ctx, ledgercheck.Use("a", 1, 1)); err == nil {
			t.Fatal("Settle succeeded")
		}
		if err := l.Release(ctx, "a"); err == nil {
			t.Fatal("Release succeeded")
		}
		if _, err := l.Balance(ctx, "k-1", billing.Limits{}, ledgercheck.T0); err == nil {
			t.Fatal("Balance succeeded")
		}
	})
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := sqlledger.Open(ctx, "mysql", "x", nil); err == nil || !strings.Contains(err.Error(), "unknown driver") {
		t.Fatalf("unknown driver: %v", err)
	}
	if _, err := sqlledger.Open(ctx, "sqlite", " ", nil); err == nil {
		t.Fatal("empty SQLite DSN opened")
	}
	if _, err := sqlledger.Open(ctx, "postgres", "", nil); err == nil {
		t.Fatal("empty PostgreSQL URL opened")
	}
}
