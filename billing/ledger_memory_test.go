package billing_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/internal/ledgertest"
	"github.com/relaykit/responsesrelay/internal/testclock"
)

// MemoryLedger passes the conformance suite; its two instances are one
// ledger, as two callers in one process share it.
func TestMemoryLedgerConformance(t *testing.T) {
	var (
		mu     sync.Mutex
		clocks = map[billing.Ledger]*testclock.Clock{}
	)
	newLedger := func(t *testing.T) billing.Ledger {
		c := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		l := &billing.MemoryLedger{HoldTTL: 10 * time.Minute, Now: c.Now}
		mu.Lock()
		clocks[l] = c
		mu.Unlock()
		return l
	}
	ledgertest.Run(t, newLedger, ledgertest.Options{
		Shared: func(t *testing.T) (a, b billing.Ledger) {
			l := new(billing.MemoryLedger) // the zero value, on the real clock
			return l, l
		},
		HoldTTL: 10 * time.Minute,
		Advance: func(l billing.Ledger, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			clocks[l].Advance(d)
		},
	})
}

var ledgerT0 = time.Date(2026, 3, 10, 12, 0, 20, 0, time.UTC)

// newClockLedger is a MemoryLedger on a clock the test moves.
func newClockLedger() (*billing.MemoryLedger, *testclock.Clock) {
	c := testclock.New(ledgerT0)
	return &billing.MemoryLedger{Now: c.Now}, c
}

func mustHold(t *testing.T, l billing.Ledger, q billing.Request) billing.Remaining {
	t.Helper()
	r, err := l.Hold(t.Context(), q)
	if err != nil {
		t.Fatalf("Hold %s: %v", q.RequestID, err)
	}
	return r
}

func mustSettle(t *testing.T, l billing.Ledger, u billing.Usage) {
	t.Helper()
	if err := l.Settle(t.Context(), u); err != nil {
		t.Fatalf("Settle %s: %v", u.RequestID, err)
	}
}

func balance(t *testing.T, l *billing.MemoryLedger, key string, lim billing.Limits, now time.Time) billing.Balance {
	t.Helper()
	b, err := l.Balance(t.Context(), key, lim, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A hold lives HoldTTL (1 h by default) on the ledger's clock, whatever
// the turn's own start time says.
func TestMemoryLedgerHoldTTL(t *testing.T) {
	l, c := newClockLedger()
	lim := billing.Limits{BudgetMicros: 1000}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) // long before the clock: no matter
	mustHold(t, l, billing.Request{RequestID: "r1", APIKeyID: "k", KeyLimits: lim, HoldMicros: 1000, Now: old})
	c.Advance(time.Hour - time.Second)
	if _, err := l.Hold(t.Context(), billing.Request{RequestID: "r2", APIKeyID: "k", KeyLimits: lim, HoldMicros: 1, Now: old}); err == nil {
		t.Fatal("r1's hold expired before its hour")
	}
	if b := balance(t, l, "k", lim, old); b.Holds != 1 || b.HeldMicros != 1000 {
		t.Fatalf("balance %+v, want r1 held", b)
	}
	c.Advance(time.Second)
	if b := balance(t, l, "k", lim, old); b.Holds != 0 || b.HeldMicros != 0 || b.RemainingMicros != 1000 {
		t.Fatalf("balance %+v after an hour, want r1's hold gone", b)
	}
	// A Hold of the expired id holds anew.
	mustHold(t, l, billing.Request{RequestID: "r1", APIKeyID: "k", KeyLimits: lim, HoldMicros: 600, Now: old})
	if b := balance(t, l, "k", lim, old); b.Holds != 1 || b.HeldMicros != 600 {
		t.Fatalf("balance %+v, want r1 held again for 600", b)
	}
	_, holds, _, _ := billing.LedgerSizes(l)
	if holds != 1 {
		t.Fatalf("%d holds kept, want 1", holds)
	}
}

// Settled ids are remembered up to MaxSettled, oldest forgotten first,
// and for SettledTTL: a flood of distinct ids costs at most that.
func TestMemoryLedgerSettledBounds(t *testing.T) {
	l, c := newClockLedger()
	l.MaxSettled = 1000
	const n = 100_000
	for i := range n {
		mustSettle(t, l, billing.Usage{RequestID: fmt.Sprintf("r%d", i), APIKeyID: "k", CostMicros: 1, CreatedAt: ledgerT0})
	}
	if _, _, _, settled := billing.LedgerSizes(l); settled != 1000 {
		t.Fatalf("%d settled ids kept, want MaxSettled (1000)", settled)
	}
	spent := func() int64 { return balance(t, l, "k", billing.Limits{}, ledgerT0).SpentMicros }
	if got := spent(); got != n {
		t.Fatalf("spent %d, want %d", got, n)
	}
	mustSettle(t, l, billing.Usage{RequestID: fmt.Sprintf("r%d", n-1), APIKeyID: "k", CostMicros: 1, CreatedAt: ledgerT0})
	if got := spent(); got != n {
		t.Fatalf("a recent id settled again: spent %d, want %d", got, n)
	}
	// The price of the bound: an id forgotten is debited again.
	mustSettle(t, l, billing.Usage{RequestID: "r0", APIKeyID: "k", CostMicros: 1, CreatedAt: ledgerT0})
	if got := spent(); got != n+1 {
		t.Fatalf("a forgotten id settled again: spent %d, want %d", got, n+1)
	}

	c.Advance(24*time.Hour - time.Second)
	if _, _, _, settled := billing.LedgerSizes(l); settled != 1000 {
		t.Fatalf("%d settled ids kept within SettledTTL, want 1000", settled)
	}
	c.Advance(time.Second)
	mustSettle(t, l, billing.Usage{RequestID: "late", APIKeyID: "k", CreatedAt: ledgerT0})
	if _, _, _, settled := billing.LedgerSizes(l); settled != 1 {
		t.Fatalf("%d settled ids kept after SettledTTL, want 1", settled)
	}
}

// A flood of distinct request ids, held and ended, keeps the ledger's
// memory flat: the hold queue stays near the holds in flight (one here,
// that never ends), settled ids within MaxSettled, one scope per key.
func TestMemoryLedgerFloodMemory(t *testing.T) {
	l, c := newClockLedger()
	l.MaxSettled = 1000
	ctx := t.Context()
	mustHold(t, l, billing.Request{RequestID: "stuck", APIKeyID: "k", UserID: "u", HoldMicros: 5, Now: ledgerT0})
	flood := func(from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprintf("flood-%d", i)
			now := ledgerT0.Add(time.Duration(i) * time.Second) // a new minute every 60
			if _, err := l.Hold(ctx, billing.Request{RequestID: id, APIKeyID: "k", UserID: "u", HoldMicros: 10, HoldTokens: 10, Now: now}); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				_ = l.Settle(ctx, billing.Usage{RequestID: id, APIKeyID: "k", UserID: "u", CostMicros: 1, CreatedAt: now})
			} else {
				_ = l.Release(ctx, id)
			}
		}
	}
	flood(0, 20_000) // reach the steady state
	before := heapAlloc()
	flood(20_000, 220_000)
	after := heapAlloc()
	scopes, holds, queue, settled := billing.LedgerSizes(l)
	if scopes != 2 || holds != 1 || queue > 2*holds+1024+1 || settled > 1000 {
		t.Fatalf("after the flood: %d scopes, %d holds, %d queued, %d settled; want 2, 1, at most 1027, at most 1000", scopes, holds, queue, settled)
	}
	// 200 000 turns remembered whole would be some 20 MB.
	if growth := int64(after) - int64(before); growth > 4<<20 {
		t.Fatalf("the heap grew %d bytes over 200 000 turns", growth)
	}
	if b := balance(t, l, "k", billing.Limits{}, ledgerT0); b.Holds != 1 || b.HeldMicros != 5 || b.SpentMicros != 110_000 {
		t.Fatalf("balance %+v, want the stuck hold alone and 110 000 spent", b)
	}
	c.Advance(time.Hour)
	if _, err := l.Balance(ctx, "k", billing.Limits{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, holds, queue, _ := billing.LedgerSizes(l); holds != 0 || queue != 0 {
		t.Fatalf("after HoldTTL: %d holds, %d queued, want none", holds, queue)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Holds in flight are bounded: past the bound Hold fails with an error
// that is not a Denial (the relay answers 503), until one ends.
func TestMemoryLedgerMaxHolds(t *testing.T) {
	l, _ := newClockLedger()
	billing.SetLedgerMaxHolds(l, 100)
	for i := range 100 {
		mustHold(t, l, billing.Request{RequestID: fmt.Sprintf("r%d", i), APIKeyID: "k", Now: ledgerT0})
	}
	_, err := l.Hold(t.Context(), billing.Request{RequestID: "r100", APIKeyID: "k", Now: ledgerT0})
	if err == nil {
		t.Fatal("hold 101 of 100 admitted")
	}
	if _, ok := errors.AsType[*billing.Denial](err); ok {
		t.Fatalf("hold 101: %v, want an error that is not a Denial", err)
	}
	// A hold in flight asked again is no new hold.
	mustHold(t, l, billing.Request{RequestID: "r5", APIKeyID: "k", Now: ledgerT0})
	if err := l.Release(t.Context(), "r0"); err != nil {
		t.Fatal(err)
	}
	mustHold(t, l, billing.Request{RequestID: "r100", APIKeyID: "k", Now: ledgerT0})
}

// Balance: the window's spend, the holds in flight, what is left.
func TestMemoryLedgerBalance(t *testing.T) {
	l, c := newClockLedger()
	day := billing.Limits{BudgetMicros: 1000, Period: billing.PeriodDay}
	mustSettle(t, l, billing.Usage{RequestID: "r1", APIKeyID: "k", CostMicros: 300, CreatedAt: ledgerT0})
	mustSettle(t, l, billing.Usage{RequestID: "r0", APIKeyID: "k", CostMicros: 50, CreatedAt: ledgerT0.AddDate(0, 0, -1)})
	mustHold(t, l, billing.Request{RequestID: "r2", APIKeyID: "k", KeyLimits: day, HoldMicros: 200, Now: ledgerT0})
	want := billing.Balance{SpentMicros: 300, HeldMicros: 200, Holds: 1, RemainingMicros: 500, Period: "2026-03-10"}
	if b := balance(t, l, "k", day, ledgerT0); b != want {
		t.Fatalf("balance %+v, want %+v", b, want)
	}
	if b := balance(t, l, "k", day, time.Time{}); b != want { // zero: the ledger's clock, at ledgerT0
		t.Fatalf("balance at the clock %+v, want %+v", b, want)
	}
	want = billing.Balance{SpentMicros: 350, HeldMicros: 200, Holds: 1, RemainingMicros: -1, Period: "total"}
	if b := balance(t, l, "k", billing.Limits{}, ledgerT0); b != want {
		t.Fatalf("unlimited balance %+v, want %+v", b, want)
	}
	want = billing.Balance{RemainingMicros: 1000, Period: "2026-03"}
	if b := balance(t, l, "nobody", billing.Limits{BudgetMicros: 1000, Period: billing.PeriodMonth}, ledgerT0); b != want {
		t.Fatalf("balance of an unknown key %+v, want %+v", b, want)
	}
	// Overspent: nothing left, never less.
	mustSettle(t, l, billing.Usage{RequestID: "r2", APIKeyID: "k", CostMicros: 5000, CreatedAt: ledgerT0})
	want = billing.Balance{SpentMicros: 5300, RemainingMicros: 0, Period: "2026-03-10"}
	if b := balance(t, l, "k", day, ledgerT0); b != want {
		t.Fatalf("overspent balance %+v, want %+v", b, want)
	}
	c.Advance(24 * time.Hour)
	want = billing.Balance{RemainingMicros: 1000, Period: "2026-03-11"}
	if b := balance(t, l, "k", day, time.Time{}); b != want {
		t.Fatalf("next day's balance %+v, want %+v", b, want)
	}
}

// A negative tuning field panics at first use, naming the field.
func TestMemoryLedgerNegativeKnobsPanic(t *testing.T) {
	for name, l := range map[string]*billing.MemoryLedger{
		"HoldTTL":    {HoldTTL: -1},
		"SettledTTL": {SettledTTL: -1},
		"MaxSettled": {MaxSettled: -1},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if p, _ := recover().(string); !strings.Contains(p, "MemoryLedger."+name) {
					t.Fatalf("panic %q, want one naming MemoryLedger.%s", p, name)
				}
			}()
			_ = l.Settle(t.Context(), billing.Usage{RequestID: "r1", APIKeyID: "k"})
		})
	}
}

// A turn stamped with an earlier minute than its key's counters (another
// clock, a slow start) counts in the current minute: it never reopens a
// minute gone.
func TestMemoryLedgerEarlierMinute(t *testing.T) {
	l, _ := newClockLedger()
	lim := billing.Limits{RPM: 2}
	mustHold(t, l, billing.Request{RequestID: "r1", APIKeyID: "k", KeyLimits: lim, Now: ledgerT0.Add(time.Minute)})
	mustHold(t, l, billing.Request{RequestID: "r2", APIKeyID: "k", KeyLimits: lim, Now: ledgerT0})
	_, err := l.Hold(t.Context(), billing.Request{RequestID: "r3", APIKeyID: "k", KeyLimits: lim, Now: ledgerT0.Add(time.Minute)})
	if d, ok := errors.AsType[*billing.Denial](err); !ok || d.Type != "requests" {
		t.Fatalf("third turn of the minute: %v, want a requests denial", err)
	}
}

// A request without Now and a record without CreatedAt take the ledger's
// clock; the Retry-After of a rate limit runs to the next minute.
func TestMemoryLedgerZeroTimes(t *testing.T) {
	l, c := newClockLedger()
	c.Set(time.Date(2026, 3, 10, 23, 59, 59, 500e6, time.UTC))
	lim := billing.Limits{RPM: 1, BudgetMicros: 100, Period: billing.PeriodDay}
	mustHold(t, l, billing.Request{RequestID: "r1", APIKeyID: "k", KeyLimits: lim})
	_, err := l.Hold(t.Context(), billing.Request{RequestID: "r2", APIKeyID: "k", KeyLimits: lim})
	d, ok := errors.AsType[*billing.Denial](err)
	if !ok || d.Type != "requests" || d.RetryAfter != 500*time.Millisecond {
		t.Fatalf("second turn: %v (%+v), want a requests denial with RetryAfter 500ms", err, d)
	}
	mustSettle(t, l, billing.Usage{RequestID: "r1", APIKeyID: "k", CostMicros: 100})
	if b := balance(t, l, "k", lim, time.Time{}); b.SpentMicros != 100 || b.Period != "2026-03-10" {
		t.Fatalf("balance %+v, want 100 spent on 2026-03-10", b)
	}
}

// A record of a day older than the two a scope keeps counts in its total
// (and its month) only: the budget of a day that far back no longer
// admits turns.
func TestMemoryLedgerOldDay(t *testing.T) {
	l, _ := newClockLedger()
	for i := range 3 {
		mustSettle(t, l, billing.Usage{RequestID: fmt.Sprintf("r%d", i), APIKeyID: "k", CostMicros: 100, CreatedAt: ledgerT0.AddDate(0, 0, i)})
	}
	mustSettle(t, l, billing.Usage{RequestID: "late", APIKeyID: "k", CostMicros: 1000, CreatedAt: ledgerT0})
	for _, c := range []struct {
		period string
		at     time.Time
		spent  int64
	}{
		{billing.PeriodTotal, ledgerT0, 1300},
		{billing.PeriodMonth, ledgerT0, 1300},
		{billing.PeriodDay, ledgerT0.AddDate(0, 0, 2), 100},
		{billing.PeriodDay, ledgerT0.AddDate(0, 0, 1), 100},
		{billing.PeriodDay, ledgerT0, 0}, // forgotten
	} {
		if b := balance(t, l, "k", billing.Limits{Period: c.period}, c.at); b.SpentMicros != c.spent {
			t.Errorf("%s at %v: spent %d, want %d", c.period, c.at, b.SpentMicros, c.spent)
		}
	}
}

// Amounts saturate: a cost of math.MaxInt64 (a price past int64) twice
// stays the largest spend, never wraps to a credit.
func TestMemoryLedgerSaturates(t *testing.T) {
	l, _ := newClockLedger()
	for _, id := range []string{"r1", "r2"} {
		mustSettle(t, l, billing.Usage{RequestID: id, APIKeyID: "k", CostMicros: math.MaxInt64, TotalTokens: math.MaxInt64, CreatedAt: ledgerT0})
	}
	if b := balance(t, l, "k", billing.Limits{Period: billing.PeriodDay}, ledgerT0); b.SpentMicros != math.MaxInt64 {
		t.Fatalf("spent %d, want math.MaxInt64", b.SpentMicros)
	}
	_, err := l.Hold(t.Context(), billing.Request{RequestID: "r3", APIKeyID: "k", KeyLimits: billing.Limits{BudgetMicros: 1000}, Now: ledgerT0})
	if d, ok := errors.AsType[*billing.Denial](err); !ok || d.Type != "" {
		t.Fatalf("hold after the overflowing costs: %v, want insufficient_quota", err)
	}
	// Holds saturate too.
	big := billing.Limits{BudgetMicros: math.MaxInt64 - 1, TPM: math.MaxInt64 - 1}
	mustHold(t, l, billing.Request{RequestID: "h1", APIKeyID: "k2", KeyLimits: big, HoldMicros: math.MaxInt64 - 1, Now: ledgerT0})
	_, err = l.Hold(t.Context(), billing.Request{RequestID: "h2", APIKeyID: "k2", KeyLimits: big, HoldMicros: 2, Now: ledgerT0})
	if d, ok := errors.AsType[*billing.Denial](err); !ok || d.Type != "" {
		t.Fatalf("hold past the largest budget: %v, want insufficient_quota", err)
	}
	// Holds in flight add up exactly, with a budget or without.
	mustHold(t, l, billing.Request{RequestID: "u1", APIKeyID: "k4", HoldMicros: math.MaxInt64, Now: ledgerT0})
	_, err = l.Hold(t.Context(), billing.Request{RequestID: "u2", APIKeyID: "k4", HoldMicros: 1, Now: ledgerT0})
	if d, ok := errors.AsType[*billing.Denial](err); !ok || d.Type != "" {
		t.Fatalf("hold past an int64 of holds: %v, want insufficient_quota", err)
	}
	mustHold(t, l, billing.Request{RequestID: "u3", APIKeyID: "k4", Now: ledgerT0})
	if err := l.Release(t.Context(), "u1"); err != nil {
		t.Fatal(err)
	}
	if b := balance(t, l, "k4", billing.Limits{}, ledgerT0); b.HeldMicros != 0 || b.Holds != 1 {
		t.Fatalf("after the huge hold's release: %+v, want nothing held by one turn", b)
	}
	mustHold(t, l, billing.Request{RequestID: "h3", APIKeyID: "k3", KeyLimits: big, HoldTokens: math.MaxInt64 - 1, Now: ledgerT0})
	_, err = l.Hold(t.Context(), billing.Request{RequestID: "h4", APIKeyID: "k3", KeyLimits: big, HoldTokens: 2, Now: ledgerT0})
	if d, ok := errors.AsType[*billing.Denial](err); !ok || d.Type != "tokens" {
		t.Fatalf("hold past the largest TPM: %v, want a tokens denial", err)
	}
}

// The record names who ran the turn: it is debited, and the hold of its
// id ends whoever made it.
func TestMemoryLedgerSettleNamesScopes(t *testing.T) {
	l, _ := newClockLedger()
	mustHold(t, l, billing.Request{RequestID: "r1", APIKeyID: "a", UserID: "u", HoldMicros: 100, Now: ledgerT0})
	mustSettle(t, l, billing.Usage{RequestID: "r1", APIKeyID: "b", UserID: "u", CostMicros: 70, CreatedAt: ledgerT0})
	if b := balance(t, l, "a", billing.Limits{}, ledgerT0); b.SpentMicros != 0 || b.Holds != 0 || b.HeldMicros != 0 {
		t.Fatalf("key a: %+v, want its hold ended and nothing spent", b)
	}
	if b := balance(t, l, "b", billing.Limits{}, ledgerT0); b.SpentMicros != 70 {
		t.Fatalf("key b: %+v, want 70 spent", b)
	}
	// A record without ids debits the scopes its hold had.
	mustHold(t, l, billing.Request{RequestID: "r2", APIKeyID: "a", UserID: "u", HoldMicros: 100, Now: ledgerT0})
	mustSettle(t, l, billing.Usage{RequestID: "r2", CostMicros: 30, CreatedAt: ledgerT0})
	if b := balance(t, l, "a", billing.Limits{}, ledgerT0); b.SpentMicros != 30 || b.Holds != 0 {
		t.Fatalf("key a: %+v, want 30 spent and no hold", b)
	}
}

// Hold, Settle, Release and Balance from many goroutines over shared
// keys and one user: every hold ends, every cost is debited once.
func TestMemoryLedgerRace(t *testing.T) {
	var l billing.MemoryLedger
	lim := billing.Limits{BudgetMicros: math.MaxInt64 / 2, RPM: 1 << 40, TPM: 1 << 40}
	var (
		wg    sync.WaitGroup
		spent [3]atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			ctx := context.Background()
			for i := range 500 {
				k := (g + i) % 3
				key := fmt.Sprintf("k%d", k)
				id := fmt.Sprintf("g%d-%d", g, i)
				q := billing.Request{RequestID: id, APIKeyID: key, UserID: "u", KeyLimits: lim, UserLimits: lim, HoldMicros: 10, HoldTokens: 10}
				if _, err := l.Hold(ctx, q); err != nil {
					t.Error(err)
					return
				}
				switch i % 3 {
				case 0:
					_ = l.Release(ctx, id)
				default:
					u := billing.Usage{RequestID: id, APIKeyID: key, UserID: "u", CostMicros: int64(i % 7), TotalTokens: 5}
					_ = l.Settle(ctx, u)
					_ = l.Settle(ctx, u)
					spent[k].Add(u.CostMicros)
				}
				if _, err := l.Balance(ctx, key, lim, time.Time{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for k := range spent {
		b := balance(t, &l, fmt.Sprintf("k%d", k), billing.Limits{}, time.Time{})
		if b.SpentMicros != spent[k].Load() || b.Holds != 0 || b.HeldMicros != 0 {
			t.Errorf("k%d: balance %+v, want %d spent and no hold", k, b, spent[k].Load())
		}
	}
}
