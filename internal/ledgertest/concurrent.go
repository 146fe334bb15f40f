package ledgertest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaykit/responsesrelay/billing"
)

// turns is how many turns race in each phase of the concurrent case.
const turns = 50

// race runs turns goroutines at once, turn i on ledger a when i is even
// and b when odd: each holds x(i) and, when admitted, settles it for
// cost(i). It returns how many were admitted and what they cost, and
// fails the test on any refusal that is not of kind ("quota",
// "requests" or "tokens").
func (c *tc) race(x func(i int) turn, cost func(i int) int64, kind string) (admitted, spent int64) {
	c.Helper()
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		n, s  atomic.Int64
		errs  = make(chan error, turns)
	)
	for i := range turns {
		l := c.a
		if i%2 == 1 {
			l = c.b
		}
		q := c.request(x(i))
		wg.Go(func() {
			<-start
			_, err := l.Hold(c.Context(), q)
			if err != nil {
				d, ok := errors.AsType[*billing.Denial](err)
				switch {
				case !ok:
					errs <- fmt.Errorf("Hold %s: %w", q.RequestID, err)
				case kind == "quota" && !isQuota(d), kind != "quota" && (d.Type != kind || d.Code != "rate_limit_exceeded"):
					errs <- fmt.Errorf("Hold %s: denial %+v, want %s", q.RequestID, d, kind)
				}
				return
			}
			n.Add(1)
			u := billing.Usage{RequestID: q.RequestID, APIKeyID: q.APIKeyID, UserID: q.UserID,
				CostMicros: cost(i), TotalTokens: q.HoldTokens, CreatedAt: q.Now}
			if err := l.Settle(c.Context(), u); err != nil {
				errs <- fmt.Errorf("Settle %s: %w", q.RequestID, err)
				return
			}
			s.Add(u.CostMicros)
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		c.Error(err)
	}
	if c.Failed() {
		c.FailNow()
	}
	return n.Load(), s.Load()
}

// Concurrent holds cannot together pass a limit: with a budget that
// covers five turns' holds, exactly five of fifty run when each costs
// its hold, and what they cost never passes the budget when they cost
// less; RPM and TPM admit exactly what fits. Turns alternate between
// the two instances when the ledger has them.
func testConcurrent(c *tc) {
	const hold = 1000
	kl := billing.Limits{BudgetMicros: 5 * hold}
	k := c.key("exact")
	n, spent := c.race(func(i int) turn {
		return turn{id: fmt.Sprintf("exact-%d", i), key: k, kl: kl, micros: hold}
	}, func(int) int64 { return hold }, "quota")
	if n != 5 || spent != 5*hold {
		c.Fatalf("%d turns admitted, %d spent; want 5 and %d", n, spent, 5*hold)
	}
	c.budgetLeft(c.a, turn{key: k, kl: kl}, 0)
	c.budgetLeft(c.b, turn{key: k, kl: kl}, 0)

	// Costs below the hold: more turns run, never more than the budget.
	k = c.key("less")
	u, ul := c.user("less"), billing.Limits{BudgetMicros: 5 * hold}
	n, spent = c.race(func(i int) turn {
		return turn{id: fmt.Sprintf("less-%d", i), key: k, kl: kl, user: u, ul: ul, micros: hold}
	}, func(i int) int64 { return int64(i*37) % (hold + 1) }, "quota")
	if n < 5 || spent > 5*hold {
		c.Fatalf("%d turns admitted, %d spent; want at least 5 and at most %d", n, spent, 5*hold)
	}
	c.budgetLeft(c.a, turn{key: k, kl: kl}, 5*hold-spent)
	c.budgetLeft(c.b, turn{key: c.key("less-other"), user: u, ul: ul}, 5*hold-spent)

	k, kl = c.key("rpm"), billing.Limits{RPM: 7}
	if n, _ = c.race(func(i int) turn {
		return turn{id: fmt.Sprintf("rpm-%d", i), key: k, kl: kl}
	}, func(int) int64 { return 0 }, "requests"); n != 7 {
		c.Fatalf("RPM 7: %d turns admitted", n)
	}

	k, kl = c.key("tpm"), billing.Limits{TPM: 1000}
	if n, _ = c.race(func(i int) turn {
		return turn{id: fmt.Sprintf("tpm-%d", i), key: k, kl: kl, tokens: 100}
	}, func(int) int64 { return 0 }, "tokens"); n != 10 {
		c.Fatalf("TPM 1000 at 100 tokens a turn: %d turns admitted", n)
	}
}

// Two instances over one store see one another's holds, settlements and
// releases.
func testShared(c *tc) {
	a, b := c.a, c.b
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000}
	c.hold(a, turn{id: "r1", key: k, kl: kl, micros: 600})
	c.noQuota(b, turn{id: "r2", key: k, kl: kl, micros: 600})
	c.budgetLeft(b, turn{key: k, kl: kl}, 400)

	c.settle(b, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 500})
	c.budgetLeft(a, turn{key: k, kl: kl}, 500)
	c.settle(a, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 500})
	c.budgetLeft(b, turn{key: k, kl: kl}, 500)

	c.hold(a, turn{id: "r3", key: k, kl: kl, micros: 500})
	c.budgetLeft(b, turn{key: k, kl: kl}, 0)
	c.release(b, "r3")
	c.budgetLeft(a, turn{key: k, kl: kl}, 500)

	c.wantRemaining("r3 held again on b", c.hold(b, turn{id: "r3", key: k, kl: kl, micros: 100}), rem(-1, -1, 400))
	c.wantRemaining("r3 held again on a", c.hold(a, turn{id: "r3", key: k, kl: kl, micros: 100}), rem(-1, -1, 400))

	k, kl = c.key("rpm"), billing.Limits{RPM: 2}
	c.hold(a, turn{id: "p1", key: k, kl: kl})
	c.hold(b, turn{id: "p2", key: k, kl: kl})
	c.rateLimited(a, turn{id: "p3", key: k, kl: kl}, "requests")
}

// A hold whose turn never ends stops counting after the hold lifetime; a
// late Settle of it still debits, and a late Release changes nothing.
func testExpiry(c *tc, ttl time.Duration, advance func(time.Duration)) {
	l := c.a
	k, kl := c.key("k"), billing.Limits{BudgetMicros: 1000}
	c.hold(l, turn{id: "r1", key: k, kl: kl, micros: 1000})
	c.noQuota(l, turn{id: "r2", key: k, kl: kl, micros: 1})

	advance(ttl + time.Minute)
	later := t0.Add(ttl + time.Minute)
	c.wantRemaining("r3 after r1 expired", c.hold(l, turn{id: "r3", key: k, kl: kl, micros: 1000, at: later}), rem(-1, -1, 0))
	c.settle(l, billing.Usage{RequestID: "r1", APIKeyID: k, CostMicros: 300})
	c.release(l, "r1")
	c.release(l, "r3")
	c.budgetLeft(l, turn{key: k, kl: kl, at: later}, 700)
}
