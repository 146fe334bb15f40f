// Package ledgercheck holds the behaviour the examples' shared
// billing.Ledger stores (Redis, SQL) must show, above all the one they
// exist for: several relay instances, each with a Ledger value of its own
// on one store, never spend past a budget or a rate limit together.
package ledgercheck

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// Instances makes Ledger values over one fresh, empty store: each call
// of the function it returns is another relay instance on that store.
// The Ledgers use the default hold lifetime (1 h).
type Instances func(t *testing.T) (instance func() billing.Ledger)

// T0 is the middle of a UTC minute; the checks move time by Request.Now.
var T0 = time.Date(2026, 3, 10, 12, 0, 30, 0, time.UTC)

// Run runs every check as a subtest, each on a fresh store. They add to
// the conformance suite (internal/ledgertest) what a shared store must
// also show: the boundary of a hold's lifetime, turns with no scope,
// amounts that would overflow, and Balance. ConcurrentBudget, a budget
// spent from two instances at once, each turn settled by the other one,
// is the stores' own test.
func Run(t *testing.T, newStore Instances) {
	t.Run("HoldExpiry", func(t *testing.T) { testHoldExpiry(t, newStore(t)()) })
	t.Run("NoScope", func(t *testing.T) { testNoScope(t, newStore(t)()) })
	t.Run("HugeAmounts", func(t *testing.T) { testHugeAmounts(t, newStore(t)()) })
	t.Run("Balance", func(t *testing.T) { testBalance(t, newStore(t)) })
}

// Req is a turn of key k-1 of user u-1 at T0.
func Req(id string, micros, tokens int64, key billing.Limits) billing.Request {
	return billing.Request{RequestID: id, APIKeyID: "k-1", UserID: "u-1", HoldMicros: micros, HoldTokens: tokens,
		KeyLimits: key, Now: T0}
}

// Use is the record of a turn of Req.
func Use(id string, cost, tokens int64) billing.Usage {
	return billing.Usage{RequestID: id, APIKeyID: "k-1", UserID: "u-1", CostMicros: cost, TotalTokens: tokens, CreatedAt: T0}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// MustHold holds q and returns what is left.
func MustHold(t *testing.T, l billing.Ledger, q billing.Request) billing.Remaining {
	t.Helper()
	r, err := l.Hold(ctx(t), q)
	if err != nil {
		t.Fatalf("Hold(%s): %v", q.RequestID, err)
	}
	return r
}

// MustDeny holds q, wants a *billing.Denial and returns it.
func MustDeny(t *testing.T, l billing.Ledger, q billing.Request) *billing.Denial {
	t.Helper()
	r, err := l.Hold(ctx(t), q)
	d, ok := errors.AsType[*billing.Denial](err)
	if !ok {
		t.Fatalf("Hold(%s) = %+v, %v; want a denial", q.RequestID, r, err)
	}
	return d
}

// MustSettle settles u.
func MustSettle(t *testing.T, l billing.Ledger, u billing.Usage) {
	t.Helper()
	if err := l.Settle(ctx(t), u); err != nil {
		t.Fatalf("Settle(%s): %v", u.RequestID, err)
	}
}

// MustRelease releases id.
func MustRelease(t *testing.T, l billing.Ledger, id string) {
	t.Helper()
	if err := l.Release(ctx(t), id); err != nil {
		t.Fatalf("Release(%s): %v", id, err)
	}
}

func wantRemaining(t *testing.T, got, want billing.Remaining) {
	t.Helper()
	if got != want {
		t.Fatalf("remaining %+v, want %+v", got, want)
	}
}

func wantQuota(t *testing.T, d *billing.Denial) {
	t.Helper()
	if d.Status != 0 || d.Type != "" || d.Code != "" || d.RetryAfter != 0 || d.Message == "" {
		t.Fatalf("budget denial %+v, want the zero Denial's 429 insufficient_quota with a message", d)
	}
}

// A hold whose turn never ends stops counting after the hold lifetime
// (1 h), judged by the start of later turns.
func testHoldExpiry(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{BudgetMicros: 1000}
	MustHold(t, l, Req("lost", 900, 0, lim))
	q := Req("a", 200, 0, lim)
	q.Now = T0.Add(59 * time.Minute)
	wantQuota(t, MustDeny(t, l, q))
	q.Now = T0.Add(time.Hour)
	wantRemaining(t, MustHold(t, l, q), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 800})
	// Its late record still debits: 900 spent and 200 held overrun the
	// budget, which refuses even a free turn.
	MustSettle(t, l, Use("lost", 900, 0))
	q = Req("b", 0, 0, lim)
	q.Now = T0.Add(time.Hour)
	wantQuota(t, MustDeny(t, l, q))
	MustRelease(t, l, "a")
	wantRemaining(t, MustHold(t, l, q), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 100})
}

// A turn with no key, user or limits is held and settled for nothing.
func testNoScope(t *testing.T, l billing.Ledger) {
	q := billing.Request{RequestID: "a", HoldMicros: 10, HoldTokens: 10, Now: T0}
	wantRemaining(t, MustHold(t, l, q), billing.Unlimited)
	MustSettle(t, l, billing.Usage{RequestID: "a", CostMicros: 10, CreatedAt: T0})
	MustRelease(t, l, "a")
	if _, err := l.Hold(ctx(t), billing.Request{Now: T0}); err == nil {
		t.Fatal("Hold without a request id succeeded")
	}
}

// ConcurrentBudget sends n holds at once from two instances, each for a
// tenth of a budget that covers five, then settles the admitted ones at
// their hold: exactly five pass, and the money spent stays within the
// budget.
func ConcurrentBudget(t *testing.T, instance func() billing.Ledger, n int) {
	ls := []billing.Ledger{instance(), instance()}
	const hold = 100
	lim := billing.Limits{BudgetMicros: 5 * hold}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			l := ls[i%2]
			id := fmt.Sprint("c", i)
			_, err := l.Hold(context.Background(), Req(id, hold, 0, lim))
			if _, ok := errors.AsType[*billing.Denial](err); ok {
				return
			}
			if err != nil {
				errs <- err
				return
			}
			admitted.Add(1)
			if err := ls[(i+1)%2].Settle(context.Background(), Use(id, hold, 0)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := admitted.Load(); got != 5 {
		t.Fatalf("%d of %d concurrent holds admitted, want 5", got, n)
	}
	r := MustHold(t, ls[0], Req("after", 0, 0, lim))
	if r.BudgetMicros != 0 {
		t.Fatalf("after settling, %d left, want 0 (spent = budget)", r.BudgetMicros)
	}
	wantQuota(t, MustDeny(t, ls[1], Req("over", 1, 0, lim)))
}

// Amounts past MaxInt64 on addition (an overflowed price, a hostile
// estimate) are taken at 2^53 (ledgerkit.MaxAmount), and never fail a
// Settle on every retry.
func testHugeAmounts(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{BudgetMicros: math.MaxInt64, TPM: math.MaxInt64}
	MustHold(t, l, Req("a", math.MaxInt64, math.MaxInt64, lim))
	MustSettle(t, l, Use("a", math.MaxInt64, math.MaxInt64))
	wantQuota(t, MustDeny(t, l, Req("e", 0, 0, billing.Limits{BudgetMicros: 1<<53 - 1})))
	wantRemaining(t, MustHold(t, l, Req("f", 0, 0, billing.Limits{BudgetMicros: 1<<53 + 10})), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 10})
	for _, id := range []string{"b", "c", "d"} {
		MustHold(t, l, Req(id, math.MaxInt64, math.MaxInt64, billing.Limits{}))
		MustSettle(t, l, Use(id, math.MaxInt64, math.MaxInt64))
	}
}

// Balancer is the admin page's view of a ledger.
type Balancer interface {
	Balance(ctx context.Context, apiKeyID string, l billing.Limits, now time.Time) (billing.Balance, error)
}

// Balance is what a key's window spent, what its live holds hold, and
// what is left, on any instance; it changes nothing.
func testBalance(t *testing.T, instance func() billing.Ledger) {
	a, b := instance(), instance()
	lim := billing.Limits{BudgetMicros: 1000, Period: billing.PeriodDay}
	balance := func(l billing.Ledger, lim billing.Limits, now time.Time, want billing.Balance) {
		t.Helper()
		got, err := l.(Balancer).Balance(ctx(t), "k-1", lim, now)
		if err != nil || got != want {
			t.Fatalf("Balance at %s = %+v, %v; want %+v", now, got, err, want)
		}
	}
	balance(a, lim, T0, billing.Balance{RemainingMicros: 1000, Period: "2026-03-10"})
	MustHold(t, a, Req("a", 300, 0, lim))
	MustHold(t, b, Req("b", 200, 0, lim))
	MustSettle(t, b, Use("a", 250, 0))
	want := billing.Balance{SpentMicros: 250, HeldMicros: 200, Holds: 1, RemainingMicros: 550, Period: "2026-03-10"}
	balance(a, lim, T0, want)
	balance(b, lim, T0.Add(59*time.Minute), want)
	balance(b, billing.Limits{}, T0, billing.Balance{SpentMicros: 250, HeldMicros: 200, Holds: 1, RemainingMicros: -1, Period: "total"})
	// The next day: another window, and b's hold has expired.
	balance(a, lim, T0.Add(24*time.Hour), billing.Balance{RemainingMicros: 1000, Period: "2026-03-11"})
	// An overrun leaves nothing, never less.
	MustSettle(t, a, Use("b", 900, 0))
	balance(a, lim, T0, billing.Balance{SpentMicros: 1150, RemainingMicros: 0, Period: "2026-03-10"})
	// Balance wrote nothing: the hold a new turn sees is as before.
	wantQuota(t, MustDeny(t, a, Req("c", 0, 0, lim)))
	// Another key has nothing.
	got, err := a.(Balancer).Balance(ctx(t), "k-2", lim, T0)
	if err != nil || got != (billing.Balance{RemainingMicros: 1000, Period: "2026-03-10"}) {
		t.Fatalf("Balance of another key = %+v, %v", got, err)
	}
}
