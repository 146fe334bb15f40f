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

// Run runs every check as a subtest, each on a fresh store.
func Run(t *testing.T, newStore Instances) {
	t.Run("Budget", func(t *testing.T) { testBudget(t, newStore(t)()) })
	t.Run("RPM", func(t *testing.T) { testRPM(t, newStore(t)()) })
	t.Run("TPM", func(t *testing.T) { testTPM(t, newStore(t)()) })
	t.Run("UserScope", func(t *testing.T) { testUserScope(t, newStore(t)()) })
	t.Run("Idempotence", func(t *testing.T) { testIdempotence(t, newStore(t)()) })
	t.Run("Periods", func(t *testing.T) { testPeriods(t, newStore(t)()) })
	t.Run("HoldExpiry", func(t *testing.T) { testHoldExpiry(t, newStore(t)()) })
	t.Run("NoScope", func(t *testing.T) { testNoScope(t, newStore(t)()) })
	t.Run("HugeAmounts", func(t *testing.T) { testHugeAmounts(t, newStore(t)()) })
	t.Run("TwoInstances", func(t *testing.T) { testTwoInstances(t, newStore(t)) })
	t.Run("ConcurrentBudget", func(t *testing.T) { ConcurrentBudget(t, newStore(t), 50) })
	t.Run("ConcurrentRates", func(t *testing.T) { testConcurrentRates(t, newStore(t)) })
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

func wantRate(t *testing.T, d *billing.Denial, typ string, retry time.Duration) {
	t.Helper()
	if d.Status != 429 || d.Type != typ || d.Code != "rate_limit_exceeded" || d.RetryAfter != retry || d.Message == "" {
		t.Fatalf("denial %+v, want 429 %s rate_limit_exceeded, Retry-After %s", d, typ, retry)
	}
}

// The budget counts what was spent plus every hold in flight; a refused
// hold counts nothing; Settle debits the cost (beyond the hold too) and
// ends the hold; Release ends it with no debit.
func testBudget(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{BudgetMicros: 1000}
	wantRemaining(t, MustHold(t, l, Req("a", 400, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 600})
	wantRemaining(t, MustHold(t, l, Req("b", 500, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 100})
	wantQuota(t, MustDeny(t, l, Req("c", 101, 0, lim)))
	wantRemaining(t, MustHold(t, l, Req("d", 100, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 0})
	MustRelease(t, l, "d")
	// a cost 450 (50 over its hold): 450 spent + 500 held.
	MustSettle(t, l, Use("a", 450, 0))
	wantRemaining(t, MustHold(t, l, Req("e", 50, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 0})
	MustRelease(t, l, "e")
	wantQuota(t, MustDeny(t, l, Req("f", 51, 0, lim)))
	MustSettle(t, l, Use("b", 100, 0))
	// 550 spent, nothing held.
	wantRemaining(t, MustHold(t, l, Req("g", 450, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 0})
	MustRelease(t, l, "g")
	wantRemaining(t, MustHold(t, l, Req("h", 0, 0, lim)), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 450})
}

// RPM counts holds in the fixed UTC minute of Request.Now, refused ones
// not; a refusal says when the next minute starts.
func testRPM(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{RPM: 3}
	for i, left := range []int64{2, 1, 0} {
		r := MustHold(t, l, Req(fmt.Sprint("r", i), 0, 0, lim))
		wantRemaining(t, r, billing.Remaining{Requests: left, Tokens: -1, BudgetMicros: -1})
	}
	wantRate(t, MustDeny(t, l, Req("r3", 0, 0, lim)), "requests", 30*time.Second)
	// Ending the turns gives no request back: the minute counts requests.
	MustSettle(t, l, Use("r0", 0, 0))
	MustRelease(t, l, "r1")
	q := Req("r4", 0, 0, lim)
	q.Now = T0.Add(20 * time.Second)
	wantRate(t, MustDeny(t, l, q), "requests", 10*time.Second)
	q.Now = T0.Add(30 * time.Second) // the next minute
	wantRemaining(t, MustHold(t, l, q), billing.Remaining{Requests: 2, Tokens: -1, BudgetMicros: -1})
}

// TPM counts HoldTokens at once, and Settle corrects them to the turn's
// TotalTokens.
func testTPM(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{TPM: 100}
	wantRemaining(t, MustHold(t, l, Req("a", 0, 40, lim)), billing.Remaining{Requests: -1, Tokens: 60, BudgetMicros: -1})
	wantRemaining(t, MustHold(t, l, Req("b", 0, 40, lim)), billing.Remaining{Requests: -1, Tokens: 20, BudgetMicros: -1})
	wantRate(t, MustDeny(t, l, Req("c", 0, 30, lim)), "tokens", 30*time.Second)
	MustSettle(t, l, Use("a", 0, 10)) // 10 + 40
	wantRemaining(t, MustHold(t, l, Req("c", 0, 30, lim)), billing.Remaining{Requests: -1, Tokens: 20, BudgetMicros: -1})
	MustSettle(t, l, Use("b", 0, 45)) // 10 + 45 + 30
	wantRate(t, MustDeny(t, l, Req("d", 0, 16, lim)), "tokens", 30*time.Second)
	// A Settle without a hold corrects nothing; a refused hold counted no
	// token.
	MustSettle(t, l, Use("x", 0, 1000))
	wantRemaining(t, MustHold(t, l, Req("d", 0, 15, lim)), billing.Remaining{Requests: -1, Tokens: 0, BudgetMicros: -1})
}

// A hold must fit the user's limits too, which all the user's keys share;
// Remaining speaks of the key.
func testUserScope(t *testing.T, l billing.Ledger) {
	user := billing.Limits{BudgetMicros: 1000, RPM: 3}
	q := func(id, key string, micros int64) billing.Request {
		return billing.Request{RequestID: id, APIKeyID: key, UserID: "u-1", HoldMicros: micros, UserLimits: user, Now: T0}
	}
	wantRemaining(t, MustHold(t, l, q("a", "k-1", 600)), billing.Unlimited)
	wantQuota(t, MustDeny(t, l, q("b", "k-2", 401)))
	MustHold(t, l, q("c", "k-2", 400))
	MustSettle(t, l, billing.Usage{RequestID: "a", APIKeyID: "k-1", UserID: "u-1", CostMicros: 100, CreatedAt: T0})
	MustHold(t, l, q("d", "k-3", 500))
	wantRate(t, MustDeny(t, l, q("e", "k-4", 0)), "requests", 30*time.Second)
	// Another user has a budget of its own.
	other := q("f", "k-9", 1000)
	other.UserID = "u-2"
	MustHold(t, l, other)
	// The key's own limits apply beside the user's.
	key := q("g", "k-1", 0)
	key.Now = T0.Add(time.Minute)
	key.KeyLimits = billing.Limits{BudgetMicros: 150}
	wantRemaining(t, MustHold(t, l, key), billing.Remaining{Requests: -1, Tokens: -1, BudgetMicros: 50})
}

// Hold, Settle and Release are idempotent by request id.
func testIdempotence(t *testing.T, l billing.Ledger) {
	lim := billing.Limits{BudgetMicros: 1000, RPM: 10, TPM: 1000}
	MustHold(t, l, Req("a", 300, 100, lim))
	r := MustHold(t, l, Req("a", 300, 100, lim))
	wantRemaining(t, r, billing.Remaining{Requests: 9, Tokens: 900, BudgetMicros: 700})
	MustSettle(t, l, Use("a", 200, 100))
	MustSettle(t, l, Use("a", 200, 100))
	MustRelease(t, l, "a")
	// A Settle of a record with no hold (replayed after a restart) debits
	// once too.
	MustSettle(t, l, Use("z", 100, 0))
	MustSettle(t, l, Use("z", 100, 0))
	MustHold(t, l, Req("b", 100, 0, lim))
	MustRelease(t, l, "b")
	MustRelease(t, l, "b")
	MustRelease(t, l, "never-held")
	wantRemaining(t, MustHold(t, l, Req("c", 0, 0, lim)), billing.Remaining{Requests: 7, Tokens: 900, BudgetMicros: 700})
	// A Hold of a settled id counts nothing.
	wantRemaining(t, MustHold(t, l, Req("a", 50, 50, lim)), billing.Remaining{Requests: 7, Tokens: 900, BudgetMicros: 700})
}

// Spend counts in the windows of the turn's start: the total, its UTC day
// and month; a budget checks the window of its Period.
func testPeriods(t *testing.T, l billing.Ledger) {
	day := time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC)
	u := billing.Usage{RequestID: "old", APIKeyID: "k-1", UserID: "u-1", CostMicros: 700, CreatedAt: day}
	MustSettle(t, l, u)
	at := func(id string, now time.Time, period string) billing.Request {
		return billing.Request{RequestID: id, APIKeyID: "k-1", UserID: "u-1", HoldMicros: 0, Now: now,
			KeyLimits: billing.Limits{BudgetMicros: 1000, Period: period}}
	}
	for _, c := range []struct {
		now    time.Time
		period string
		left   int64
	}{
		{day, billing.PeriodDay, 300},
		{day, billing.PeriodMonth, 300},
		{day, "", 300},
		{day.Add(2 * time.Minute), billing.PeriodDay, 1000}, // April 1st
		{day.Add(2 * time.Minute), billing.PeriodMonth, 1000},
		{day.Add(2 * time.Minute), billing.PeriodTotal, 300},
		{day.Add(-24 * time.Hour), billing.PeriodMonth, 300},
		{day.Add(-24 * time.Hour), billing.PeriodDay, 1000},
	} {
		q := at(fmt.Sprint(c.now.Unix(), c.period), c.now, c.period)
		if got := MustHold(t, l, q).BudgetMicros; got != c.left {
			t.Errorf("period %q at %s: %d left, want %d", c.period, c.now, got, c.left)
		}
		MustRelease(t, l, q.RequestID)
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

// Two instances see each other's holds, settlements and releases.
func testTwoInstances(t *testing.T, instance func() billing.Ledger) {
	a, b := instance(), instance()
	lim := billing.Limits{BudgetMicros: 1000, RPM: 3}
	MustHold(t, a, Req("a", 600, 0, lim))
	wantQuota(t, MustDeny(t, b, Req("b", 401, 0, lim)))
	MustSettle(t, b, Use("a", 100, 0)) // settled by another instance
	wantRemaining(t, MustHold(t, b, Req("b", 900, 0, lim)), billing.Remaining{Requests: 1, Tokens: -1, BudgetMicros: 0})
	MustRelease(t, a, "b")
	wantRemaining(t, MustHold(t, a, Req("c", 0, 0, lim)), billing.Remaining{Requests: 0, Tokens: -1, BudgetMicros: 900})
	MustSettle(t, a, Use("a", 100, 0))
	wantRate(t, MustDeny(t, b, Req("d", 0, 0, lim)), "requests", 30*time.Second)
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

// RPM and TPM hold exactly across instances under concurrency.
func testConcurrentRates(t *testing.T, instance func() billing.Ledger) {
	ls := []billing.Ledger{instance(), instance()}
	for _, c := range []struct {
		name   string
		lim    billing.Limits
		tokens int64
		want   int64
	}{
		{"rpm", billing.Limits{RPM: 7}, 0, 7},
		{"tpm", billing.Limits{TPM: 1000}, 90, 11},
	} {
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				q := Req(fmt.Sprint(c.name, i), 0, c.tokens, c.lim)
				q.APIKeyID = "k-" + c.name
				_, err := ls[i%2].Hold(context.Background(), q)
				switch _, denied := errors.AsType[*billing.Denial](err); {
				case err == nil:
					admitted.Add(1)
				case !denied:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != c.want {
			t.Errorf("%s: %d of 40 admitted, want %d", c.name, got, c.want)
		}
	}
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
