package ledgertest

import (
	"errors"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// A budget admits exactly what fits: its spend, every hold in flight and
// the new hold. A refused hold counts nothing.
func testBudgetCountsHolds(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000, RPM: 100}
	x := func(id string, micros int64) turn { return turn{id: id, key: k, kl: kl, micros: micros} }

	c.wantRemaining("h1", c.hold(l, x("h1", 300)), rem(99, -1, 700))
	c.wantRemaining("h2", c.hold(l, x("h2", 300)), rem(98, -1, 400))
	c.wantRemaining("h3", c.hold(l, x("h3", 300)), rem(97, -1, 100))
	c.noQuota(l, x("h4", 300))
	c.wantRemaining("h5 (the refused h4 counted nothing)", c.hold(l, x("h5", 100)), rem(96, -1, 0))
	c.noQuota(l, x("h6", 1))

	c.release(l, "h1")
	c.wantRemaining("h7 after h1's release", c.hold(l, x("h7", 300)), rem(95, -1, 0))

	// h2 settles for less than it held: what is left is the budget less
	// the spend and the other holds (h3, h5, h7).
	c.settle(l, billing.Usage{RequestID: "h2", APIKeyID: k, CostMicros: 250})
	c.wantRemaining("h8", c.hold(l, x("h8", 50)), rem(94, -1, 0))
	c.noQuota(l, x("h9", 1))
}

// A turn that costs more than it held is debited in full: the budget
// goes below zero, and nothing more fits.
func testOverrunDebitedInFull(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000}
	c.hold(l, turn{id: "r1", key: k, kl: kl, micros: 200})
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 1500})
	c.noQuota(l, turn{id: "r2", key: k, kl: kl})
}

// A negative estimate or cost counts as zero: it never credits a scope.
func testNegativeAmounts(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000, TPM: 1000}
	c.settle(l, billing.Usage{RequestID: "r0", APIKeyID: k, CostMicros: -500, TotalTokens: -50})
	c.wantRemaining("r1", c.hold(l, turn{id: "r1", key: k, kl: kl, micros: 1000, tokens: 600}), rem(-1, 400, 0))
	c.wantRemaining("r2 holding less than nothing", c.hold(l, turn{id: "r2", key: k, kl: kl, micros: -5, tokens: -5}), rem(-1, 400, 0))
	c.noQuota(l, turn{id: "r3", key: k, kl: kl, micros: 1})
	c.wantRemaining("s1", c.hold(l, turn{id: "s1", key: k, kl: kl, tokens: 300}), rem(-1, 100, 0))
	// r1 used less than no tokens: none are counted in place of its 600.
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, TotalTokens: -100})
	c.rateLimited(l, turn{id: "r4", key: k, kl: kl, tokens: 701}, "tokens")
	c.wantRemaining("r5", c.hold(l, turn{id: "r5", key: k, kl: kl, tokens: 700}), rem(-1, 0, 1000))
}

// The user's limits bind every key of the user; a key's bind that key
// only. Remaining is the key's.
func testUserScope(c *tc) {
	l := c.a
	u, ul := c.user("u"), billing.Limits{BudgetMicros: 1000}
	ka, kb := c.key("a"), c.key("b")
	c.wantRemaining("a1", c.hold(l, turn{id: "a1", key: ka, user: u, ul: ul, micros: 600}), billing.Unlimited)
	c.noQuota(l, turn{id: "b1", key: kb, user: u, ul: ul, micros: 600})
	c.wantRemaining("b2", c.hold(l, turn{id: "b2", key: kb, user: u, ul: ul, micros: 400}), billing.Unlimited)

	// Two keys of one user, each with a budget: neither spends the other's.
	u2, kl := c.user("u2"), billing.Limits{BudgetMicros: 500}
	kc, kd := c.key("c"), c.key("d")
	c.wantRemaining("c1", c.hold(l, turn{id: "c1", key: kc, kl: kl, user: u2, micros: 500}), rem(-1, -1, 0))
	c.wantRemaining("d1", c.hold(l, turn{id: "d1", key: kd, kl: kl, user: u2, micros: 500}), rem(-1, -1, 0))

	// A user's RPM counts the turns of all its keys.
	u3, rl := c.user("u3"), billing.Limits{RPM: 2}
	ke, kf := c.key("e"), c.key("f")
	c.hold(l, turn{id: "e1", key: ke, user: u3, ul: rl})
	c.hold(l, turn{id: "f1", key: kf, user: u3, ul: rl})
	c.rateLimited(l, turn{id: "e2", key: ke, user: u3, ul: rl}, "requests")

	// Rate limits come before budgets, across scopes: a turn over both its
	// key's budget and its user's RPM is refused for the RPM.
	u5, k5 := c.user("u5"), c.key("k5")
	c.settle(l, billing.Usage{RequestID: "k5-spent", APIKeyID: k5, CostMicros: 100})
	c.hold(l, turn{id: "k6-1", key: c.key("k6"), user: u5, ul: billing.Limits{RPM: 1}})
	c.rateLimited(l, turn{id: "k5-1", key: k5, kl: billing.Limits{BudgetMicros: 100}, user: u5, ul: billing.Limits{RPM: 1}, micros: 1}, "requests")

	// A user's settlement debits the user, whichever key.
	u4 := c.user("u4")
	c.settle(l, billing.Usage{RequestID: "g1", APIKeyID: c.key("g"), UserID: u4, CostMicros: 700})
	c.budgetLeft(l, turn{key: c.key("h"), user: u4, ul: ul}, 300)
}

// Remaining counts the hold just made, and is -1 where unlimited.
func testRemaining(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{RPM: 10, TPM: 1000, BudgetMicros: 5000}
	c.wantRemaining("r1", c.hold(l, turn{id: "r1", key: k, kl: kl, micros: 1000, tokens: 100}), rem(9, 900, 4000))
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 700, TotalTokens: 40})
	c.wantRemaining("r2", c.hold(l, turn{id: "r2", key: k, kl: kl, micros: 1000, tokens: 100}), rem(8, 860, 3300))

	c.wantRemaining("budget only", c.hold(l, turn{id: "b1", key: c.key("b"), kl: billing.Limits{BudgetMicros: 10}, micros: 4}), rem(-1, -1, 6))
	c.wantRemaining("rpm only", c.hold(l, turn{id: "p1", key: c.key("p"), kl: billing.Limits{RPM: 5}, micros: 4}), rem(4, -1, -1))
	c.wantRemaining("unlimited", c.hold(l, turn{id: "n1", key: c.key("n"), micros: 4, tokens: 9}), billing.Unlimited)
}

// A record settled twice, on one instance or two, is debited once.
func testSettleIdempotent(c *tc) {
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 10000}
	c.hold(c.a, turn{id: "r1", key: k, kl: kl, micros: 1000})
	u := billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 700}
	c.settle(c.a, u)
	c.settle(c.b, u)
	u.CostMicros = 9000 // a different record under the same id changes nothing either
	c.settle(c.a, u)
	c.budgetLeft(c.a, turn{key: k, kl: kl}, 9300)
	c.budgetLeft(c.b, turn{key: k, kl: kl}, 9300)

	// Without a hold too.
	c.settle(c.b, billing.Usage{RequestID: "r2", APIKeyID: k, CostMicros: 300})
	c.settle(c.a, billing.Usage{RequestID: "r2", APIKeyID: k, CostMicros: 300})
	c.budgetLeft(c.a, turn{key: k, kl: kl}, 9000)
}

// Release ends a hold without a debit, and is idempotent; a Settle after
// it still debits (the turn did run); a Release after a Settle changes
// nothing.
func testReleaseThenSettle(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 3000}
	c.hold(l, turn{id: "r1", key: k, kl: kl, micros: 1000})
	c.release(l, "r1")
	c.budgetLeft(l, turn{key: k, kl: kl}, 3000)
	c.release(l, "r1")
	c.budgetLeft(l, turn{key: k, kl: kl}, 3000)
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 400})
	c.budgetLeft(l, turn{key: k, kl: kl}, 2600)

	c.hold(l, turn{id: "r2", key: k, kl: kl, micros: 1000})
	c.settle(l, billing.Usage{RequestID: "r2", APIKeyID: k, CostMicros: 500})
	c.release(l, "r2")
	c.budgetLeft(l, turn{key: k, kl: kl}, 2100)

	c.release(l, "never-held")
	c.budgetLeft(l, turn{key: k, kl: kl}, 2100)
}

// A record with no hold (replayed after a restart) debits its key and
// its user.
func testSettleWithoutHold(c *tc) {
	l := c.a
	k, u := c.key("k"), c.user("u")
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, UserID: u, CostMicros: 700})
	c.budgetLeft(l, turn{key: k, kl: billing.Limits{BudgetMicros: 1000}}, 300)
	c.budgetLeft(l, turn{key: c.key("other"), user: u, ul: billing.Limits{BudgetMicros: 1000}}, 300)
}

// A second Hold of an id held already counts nothing; one of an id
// settled already is admitted, counts nothing and leaves no hold.
func testDuplicateHold(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000, RPM: 10, TPM: 1000}
	r1 := turn{id: "r1", key: k, kl: kl, micros: 600, tokens: 100}
	c.wantRemaining("r1", c.hold(l, r1), rem(9, 900, 400))
	c.wantRemaining("r1 again", c.hold(l, r1), rem(9, 900, 400))
	c.wantRemaining("r2", c.hold(l, turn{id: "r2", key: k, kl: kl, micros: 400}), rem(8, 900, 0))
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 600, TotalTokens: 100})
	c.release(l, "r2")
	c.wantRemaining("r1 settled, held again", c.hold(l, r1), rem(8, 900, 400))
	c.budgetLeft(l, turn{key: k, kl: kl}, 400)
}

// Spend counts in every window of the turn's start; a budget looks at
// the window of its Period; a day resets at the next UTC day, a month at
// the next UTC month, the total never.
func testPeriods(c *tc) {
	l := c.a
	day := func(b int64) billing.Limits { return billing.Limits{BudgetMicros: b, Period: billing.PeriodDay} }
	month := func(b int64) billing.Limits { return billing.Limits{BudgetMicros: b, Period: billing.PeriodMonth} }
	total := func(b int64) billing.Limits { return billing.Limits{BudgetMicros: b, Period: billing.PeriodTotal} }
	d := time.Date(2026, 3, 30, 10, 0, 0, 0, time.UTC)

	k := c.key("k")
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 600, CreatedAt: d})
	c.budgetLeft(l, turn{key: k, kl: day(1000), at: d.Add(time.Minute)}, 400)
	c.budgetLeft(l, turn{key: k, kl: month(1000), at: d.Add(time.Minute)}, 400)
	c.budgetLeft(l, turn{key: k, kl: total(1000), at: d.Add(time.Minute)}, 400)
	c.budgetLeft(l, turn{key: k, kl: billing.Limits{BudgetMicros: 1000}, at: d.Add(time.Minute)}, 400) // "" is the total

	c.settle(l, billing.Usage{RequestID: "r2", APIKeyID: k, CostMicros: 400, CreatedAt: d.Add(time.Hour)})
	endOfDay := time.Date(2026, 3, 30, 23, 59, 59, 0, time.UTC)
	c.budgetLeft(l, turn{key: k, kl: day(1000), at: endOfDay}, 0)
	c.budgetLeft(l, turn{key: k, kl: day(1000), at: endOfDay.Add(time.Second)}, 1000)
	c.budgetLeft(l, turn{key: k, kl: month(1000), at: endOfDay.Add(time.Second)}, 0)

	// A turn counts in the day it started, whenever it settles.
	c.settle(l, billing.Usage{RequestID: "r3", APIKeyID: k, CostMicros: 100, CreatedAt: endOfDay})
	c.budgetLeft(l, turn{key: k, kl: day(1000), at: endOfDay.Add(2 * time.Second)}, 1000)
	c.budgetLeft(l, turn{key: k, kl: day(2000), at: endOfDay}, 900)

	endOfMonth := time.Date(2026, 3, 31, 23, 59, 59, 0, time.UTC)
	c.budgetLeft(l, turn{key: k, kl: month(2000), at: endOfMonth}, 900)
	c.budgetLeft(l, turn{key: k, kl: month(2000), at: endOfMonth.Add(time.Second)}, 2000)
	c.budgetLeft(l, turn{key: k, kl: total(2000), at: endOfMonth.Add(400 * 24 * time.Hour)}, 900)

	// Days in a row: the day before keeps its spend, for the turns that
	// started on it and settle late.
	k2 := c.key("k2")
	for i, cost := range []int64{100, 200, 400} {
		c.settle(l, billing.Usage{RequestID: fmt.Sprintf("k2-%d", i), APIKeyID: k2, CostMicros: cost, CreatedAt: d.AddDate(0, 0, i)})
	}
	c.budgetLeft(l, turn{key: k2, kl: day(1000), at: d.AddDate(0, 0, 2)}, 600)
	c.budgetLeft(l, turn{key: k2, kl: day(1000), at: d.AddDate(0, 0, 1)}, 800)
	c.budgetLeft(l, turn{key: k2, kl: month(1000), at: d.AddDate(0, 0, 1)}, 700) // March 30 and 31
	c.budgetLeft(l, turn{key: k2, kl: month(1000), at: d.AddDate(0, 0, 2)}, 600) // April 1

	// The user's windows alike.
	u := c.user("u")
	c.settle(l, billing.Usage{RequestID: "r4", APIKeyID: c.key("j"), UserID: u, CostMicros: 700, CreatedAt: d})
	c.budgetLeft(l, turn{key: c.key("j2"), user: u, ul: day(1000), at: d}, 300)
	c.budgetLeft(l, turn{key: c.key("j2"), user: u, ul: day(1000), at: d.Add(24 * time.Hour)}, 1000)
	c.budgetLeft(l, turn{key: c.key("j2"), user: u, ul: month(1000), at: d.Add(24 * time.Hour)}, 300)
}

// RPM admits exactly RPM turns in a UTC minute; neither a release nor a
// settlement gives one back; the next minute starts again.
func testRequestsPerMinute(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{RPM: 3}
	x := func(id string, at time.Time) turn { return turn{id: id, key: k, kl: kl, at: at} }
	c.wantRemaining("r1", c.hold(l, x("r1", t0)), rem(2, -1, -1))
	c.wantRemaining("r2", c.hold(l, x("r2", t0.Add(time.Second))), rem(1, -1, -1))
	c.wantRemaining("r3", c.hold(l, x("r3", t0.Add(2*time.Second))), rem(0, -1, -1))
	d := c.rateLimited(l, x("r4", t0.Add(10*time.Second)), "requests")
	// t0 is 20 s into its minute: the next starts 30 s after r4.
	if d.RetryAfter < 29*time.Second || d.RetryAfter > 31*time.Second {
		c.Fatalf("RetryAfter %v, want 30s", d.RetryAfter)
	}
	c.release(l, "r1")
	c.settle(l, billing.Usage{RequestID: "r2", APIKeyID: k, CreatedAt: t0})
	c.rateLimited(l, x("r5", t0.Add(20*time.Second)), "requests")
	c.wantRemaining("r6 next minute", c.hold(l, x("r6", t0.Add(40*time.Second))), rem(2, -1, -1))
}

// TPM counts a hold's HoldTokens at once; its Settle counts the turn's
// TotalTokens in their place, in the hold's minute.
func testTokensPerMinute(c *tc) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{TPM: 1000}
	x := func(id string, tokens int64) turn { return turn{id: id, key: k, kl: kl, tokens: tokens} }
	c.wantRemaining("r1", c.hold(l, x("r1", 600)), rem(-1, 400, -1))
	c.rateLimited(l, x("r2", 500), "tokens")
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, TotalTokens: 200})
	c.wantRemaining("r3", c.hold(l, x("r3", 500)), rem(-1, 300, -1))
	// More than held: counted in full.
	c.settle(l, billing.Usage{RequestID: "r3", APIKeyID: k, TotalTokens: 1400})
	c.rateLimited(l, x("r4", 0), "tokens")
	// What is left is never below zero (a negative figure means unlimited).
	c.wantRemaining("r3 settled, held again", c.hold(l, x("r3", 0)), rem(-1, 0, -1))
	// A release gives no token back.
	c.hold(l, turn{id: "s1", key: c.key("s"), kl: kl, tokens: 1000})
	c.release(l, "s1")
	c.rateLimited(l, turn{id: "s2", key: c.key("s"), kl: kl, tokens: 1}, "tokens")
	next := t0.Add(time.Minute)
	c.wantRemaining("r5 next minute", c.hold(l, turn{id: "r5", key: k, kl: kl, tokens: 100, at: next}), rem(-1, 900, -1))
}

// A turn without a request id could never be settled once: Hold and
// Settle refuse it with an error that is not a Denial (so 503).
func testNoRequestID(c *tc) {
	l := c.a
	_, err := l.Hold(c.Context(), c.request(turn{key: c.key("k"), micros: 1}))
	if err == nil {
		c.Fatal("Hold without a request id admitted")
	}
	if _, ok := errors.AsType[*billing.Denial](err); ok {
		c.Fatalf("Hold without a request id: %v, want an error that is not a Denial", err)
	}
	if err := l.Settle(c.Context(), billing.Usage{APIKeyID: c.key("k"), CostMicros: 1, CreatedAt: t0}); err == nil {
		c.Fatal("Settle without a request id: no error")
	}
}
