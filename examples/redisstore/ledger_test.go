package redisstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/ledgercheck"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/internal/ledgertest"
)

// ledgerInstances gives each check a fresh prefix; every instance is a
// Ledger of its own, on a client of its own, as relays on two hosts are.
func ledgerInstances(t *testing.T) func() billing.Ledger {
	c := newClient(t)
	p := prefix(t, c)
	return func() billing.Ledger {
		return redisstore.NewLedger(newClient(t), &redisstore.LedgerOptions{Prefix: p})
	}
}

// The conformance suite every billing.Ledger runs, with two instances on
// one Redis for its shared cases. The suite's ids are unique to its run,
// so its cases share a prefix.
func TestLedgerConformance(t *testing.T) {
	instance := ledgerInstances(t)
	ledgertest.Run(t, func(*testing.T) billing.Ledger { return instance() }, ledgertest.Options{
		Shared:  func(*testing.T) (a, b billing.Ledger) { return instance(), instance() },
		HoldTTL: time.Hour,
		// Expiry is judged by the turns' start times: no clock to move.
		Advance: func(billing.Ledger, time.Duration) {},
	})
}

func TestLedgerBehaviour(t *testing.T) {
	ledgercheck.Run(t, ledgerInstances)
}

// counter counts what a client sends to Redis: each command and each
// pipeline is one round trip.
type counter struct {
	mu    sync.Mutex
	trips int
	cmds  []string
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.trips++
		c.cmds = append(c.cmds, cmd.Name())
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		c.trips++
		c.cmds = append(c.cmds, "pipeline")
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

// take returns the round trips since the last take.
func (c *counter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, cmds := c.trips, c.cmds
	c.trips, c.cmds = 0, nil
	return n, cmds
}

// Hold, Settle and Release are one round trip each: one EVALSHA, once the
// server has the script (the first call of each script on a server that
// lacks it adds one EVAL).
func TestLedgerRoundTrips(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	var n counter
	c.AddHook(&n)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: p})
	lim := billing.Limits{BudgetMicros: 1_000_000, RPM: 1000, TPM: 1_000_000}
	q := func(id string) billing.Request {
		r := ledgercheck.Req(id, 100, 100, lim)
		r.UserLimits = lim
		return r
	}
	// Load the scripts (and see the cold cost: at most one more trip).
	ledgercheck.MustHold(t, l, q("warm"))
	ledgercheck.MustSettle(t, l, ledgercheck.Use("warm", 100, 50))
	ledgercheck.MustHold(t, l, q("warm2"))
	ledgercheck.MustRelease(t, l, "warm2")
	if trips, cmds := n.take(); trips > 8 {
		t.Fatalf("warm-up took %d round trips: %v", trips, cmds)
	}

	check := func(what string, f func()) {
		t.Helper()
		f()
		if trips, cmds := n.take(); trips != 1 || cmds[0] != "evalsha" {
			t.Fatalf("%s: %d round trips %v, want one EVALSHA", what, trips, cmds)
		}
	}
	check("Hold", func() { ledgercheck.MustHold(t, l, q("a")) })
	check("Hold (duplicate)", func() { ledgercheck.MustHold(t, l, q("a")) })
	check("Settle", func() { ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 100, 50)) })
	check("Settle (again)", func() { ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 100, 50)) })
	check("Hold", func() { ledgercheck.MustHold(t, l, q("b")) })
	check("Release", func() { ledgercheck.MustRelease(t, l, "b") })
	check("Settle (no hold)", func() { ledgercheck.MustSettle(t, l, ledgercheck.Use("c", 100, 50)) })
	over := q("d")
	over.HoldMicros = 2_000_000
	check("Hold (denied)", func() { ledgercheck.MustDeny(t, l, over) })
}

// 50 holds at once from two instances on one Redis, with a budget that
// covers five: five pass, and what they spend is the budget.
func TestLedgerConcurrentNoOverspend(t *testing.T) {
	ledgercheck.ConcurrentBudget(t, ledgerInstances(t), 50)
}

// The key layout: everything under Prefix+"{ledger}:", one slot; spend
// per window, the hold's record while it is held, the settled marker with
// its TTL; ids with the separator in them are escaped.
func TestLedgerKeyLayout(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: p, SettledTTL: time.Hour})
	ctx := context.Background()
	q := billing.Request{RequestID: "req_1", APIKeyID: "k:1", UserID: "u%1", HoldMicros: 300, HoldTokens: 70,
		KeyLimits: billing.Limits{TPM: 1000}, Now: ledgercheck.T0}
	ledgercheck.MustHold(t, l, q)
	b := p + "{ledger}:"
	if got := c.HGetAll(ctx, b+"hold:req_1").Val(); got["c"] != "300" || got["n"] != "70" || got["k"] != "key:k%3A1" || got["u"] != "user:u%251" {
		t.Fatalf("hold record %v", got)
	}
	for _, s := range []string{"key:k%3A1", "user:u%251"} {
		if got := c.Get(ctx, b+"heldsum:"+s).Val(); got != "300" {
			t.Errorf("heldsum:%s = %q, want 300", s, got)
		}
		if got := c.HGet(ctx, b+"rate:"+s, "t").Val(); got != "70" {
			t.Errorf("rate:%s tokens = %q, want 70", s, got)
		}
	}
	u := billing.Usage{RequestID: "req_1", APIKeyID: "k:1", UserID: "u%1", CostMicros: 250, TotalTokens: 90, CreatedAt: ledgercheck.T0}
	ledgercheck.MustSettle(t, l, u)
	for _, w := range []string{"total", "2026-03-10", "2026-03"} {
		for _, s := range []string{"key:k%3A1", "user:u%251"} {
			if got := c.Get(ctx, b+"spend:"+s+":"+w).Val(); got != "250" {
				t.Errorf("spend:%s:%s = %q, want 250", s, w, got)
			}
		}
	}
	if ttl := c.PTTL(ctx, b+"spend:key:k%3A1:2026-03-10").Val(); ttl < 71*time.Hour || ttl > 72*time.Hour {
		t.Errorf("day window TTL %s, want 72h", ttl)
	}
	if ttl := c.PTTL(ctx, b+"settled:req_1").Val(); ttl < 59*time.Minute || ttl > time.Hour {
		t.Errorf("settled marker TTL %s, want 1h", ttl)
	}
	if n := c.Exists(ctx, b+"hold:req_1").Val(); n != 0 {
		t.Error("hold record still there after Settle")
	}
	if got := c.Get(ctx, b+"heldsum:key:k%3A1").Val(); got != "0" {
		t.Errorf("heldsum after Settle = %q", got)
	}
	if got := c.HGet(ctx, b+"rate:key:k%3A1", "t").Val(); got != "90" {
		t.Errorf("tokens after Settle = %q, want 90 (the turn's)", got)
	}
	keys, err := c.Keys(ctx, p+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k) < len(b) || k[:len(b)] != b {
			t.Errorf("key %q outside %q", k, b)
		}
	}
}

// Expired holds are removed by the next Hold of their scopes, from every
// structure, and their record expires in Redis on its own.
func TestLedgerPrunesExpiredHolds(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: p, HoldTTL: time.Minute})
	ctx := context.Background()
	lim := billing.Limits{BudgetMicros: 1000}
	for _, id := range []string{"a", "b", "c"} {
		ledgercheck.MustHold(t, l, ledgercheck.Req(id, 100, 0, lim))
	}
	b := p + "{ledger}:"
	if ttl := c.PTTL(ctx, b+"hold:a").Val(); ttl <= time.Minute || ttl > 2*time.Minute {
		t.Fatalf("hold record TTL %s, want twice HoldTTL", ttl)
	}
	q := ledgercheck.Req("d", 100, 0, lim)
	q.Now = ledgercheck.T0.Add(time.Minute)
	if r := ledgercheck.MustHold(t, l, q); r.BudgetMicros != 900 {
		t.Fatalf("after expiry %d left, want 900", r.BudgetMicros)
	}
	for _, s := range []string{"key:k-1", "user:u-1"} {
		if n := c.ZCard(ctx, b+"holds:"+s).Val(); n != 1 {
			t.Errorf("holds:%s has %d, want 1", s, n)
		}
		if n := c.HLen(ctx, b+"held:"+s).Val(); n != 1 {
			t.Errorf("held:%s has %d, want 1", s, n)
		}
		if got := c.Get(ctx, b+"heldsum:"+s).Val(); got != "100" {
			t.Errorf("heldsum:%s = %q, want 100", s, got)
		}
	}
	// A late Release of an expired hold changes nothing.
	ledgercheck.MustRelease(t, l, "a")
	if got := c.Get(ctx, b+"heldsum:key:k-1").Val(); got != "100" {
		t.Errorf("heldsum after a late Release = %q, want 100", got)
	}
	// The same id held again after its hold expired, under another key:
	// the old hold leaves its key at once, though no hold of that key
	// pruned it, and counts once in the user.
	q = ledgercheck.Req("d", 70, 0, lim)
	q.APIKeyID, q.Now = "k-2", ledgercheck.T0.Add(2*time.Minute)
	ledgercheck.MustHold(t, l, q)
	for s, want := range map[string]string{"key:k-1": "0", "key:k-2": "70", "user:u-1": "70"} {
		if got := c.Get(ctx, b+"heldsum:"+s).Val(); got != want {
			t.Errorf("heldsum:%s = %q, want %s", s, got, want)
		}
	}
	if n := c.ZCard(ctx, b+"holds:key:k-1").Val(); n != 0 {
		t.Errorf("holds:key:k-1 has %d", n)
	}
}

// Money amounts beyond Lua's 14 printed digits are kept exactly.
func TestLedgerLargeAmounts(t *testing.T) {
	c := newClient(t)
	p := prefix(t, c)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: p})
	const big = 1_234_567_890_123_456 // $1.2 billion, 16 digits
	lim := billing.Limits{BudgetMicros: 2 * big}
	r := ledgercheck.MustHold(t, l, ledgercheck.Req("a", big, 0, lim))
	if r.BudgetMicros != big {
		t.Fatalf("left %d, want %d", r.BudgetMicros, int64(big))
	}
	ledgercheck.MustSettle(t, l, ledgercheck.Use("a", big+1, 0))
	if got := c.Get(context.Background(), p+"{ledger}:spend:key:k-1:total").Val(); got != "1234567890123457" {
		t.Fatalf("spend %q", got)
	}
}

// Redis down: every call fails with ErrUnavailable, which the relay
// answers 503 (fail closed), and a Hold is never a denial.
func TestLedgerUnavailable(t *testing.T) {
	l := redisstore.NewLedger(unreachableClient(t, testservice.ClosedAddr(t)), nil)
	ctx := context.Background()
	_, err := l.Hold(ctx, ledgercheck.Req("a", 1, 1, billing.Limits{}))
	if _, denied := errors.AsType[*billing.Denial](err); denied || !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Hold: %v", err)
	}
	if err := l.Settle(ctx, ledgercheck.Use("a", 1, 1)); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Settle: %v", err)
	}
	if err := l.Release(ctx, "a"); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Release: %v", err)
	}
}

// A Settle that failed while Redis was away is retried (by the spool)
// once it is back; a record settled before the outage is debited once,
// however often it comes again.
func TestLedgerSettleRetryAfterOutage(t *testing.T) {
	base := newClient(t)
	p := prefix(t, base)
	px := newProxy(t, base.Options().Addr)
	opts := redisOptions(t)
	opts.Addr = px.addr()
	opts.MaxRetries = -1
	c := newClientWith(t, opts)
	l := redisstore.NewLedger(c, &redisstore.LedgerOptions{Prefix: p})
	lim := billing.Limits{BudgetMicros: 1000}
	ledgercheck.MustHold(t, l, ledgercheck.Req("a", 500, 0, lim))
	ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 400, 0))
	px.setDown(true)
	if err := l.Settle(context.Background(), ledgercheck.Use("a", 400, 0)); !errors.Is(err, redisstore.ErrUnavailable) {
		t.Fatalf("Settle with Redis down: %v", err)
	}
	px.setDown(false)
	ledgercheck.MustSettle(t, l, ledgercheck.Use("a", 400, 0))
	if r := ledgercheck.MustHold(t, l, ledgercheck.Req("b", 0, 0, lim)); r.BudgetMicros != 600 {
		t.Fatalf("left %d, want 600: one debit", r.BudgetMicros)
	}
}
