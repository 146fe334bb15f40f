package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/concurrency"
)

// clock is a hand-moved time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// seeded returns a deterministic Rand that is safe for concurrent use.
func seeded(seed uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

// events records OnAccountEvent calls.
type events struct {
	mu  sync.Mutex
	all []AccountEvent
}

func (e *events) hook(_ context.Context, ev AccountEvent) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) take() []AccountEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.all
	e.all = nil
	return out
}

type fixture struct {
	s      *Scheduler
	pool   *StaticPool
	clock  *clock
	events *events
	logs   *bytes.Buffer
}

// newFixture returns a Scheduler over group "g" holding accts, with a fake
// clock, a seeded Rand and recorded events and logs.
func newFixture(t testing.TB, accts ...*Account) *fixture {
	t.Helper()
	f := &fixture{pool: NewStaticPool(), clock: newClock(), events: new(events), logs: new(bytes.Buffer)}
	f.pool.Set("g", accts)
	f.s = &Scheduler{
		Pool:           f.pool,
		Now:            f.clock.Now,
		rand:           seeded(1),
		OnAccountEvent: f.events.hook,
		Logger:         slog.New(slog.NewTextHandler(&lockedWriter{w: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// acct returns an account with ID id, Concurrency 10 and Weight 1.
func acct(id string) *Account { return &Account{ID: id, Concurrency: 10, Weight: 1} }

// pick selects for q and releases at once, returning the account ID.
func (f *fixture) pick(t testing.TB, q Request) string {
	t.Helper()
	sel, err := f.s.Select(context.Background(), q)
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	sel.Release()
	return sel.Account.ID
}

func accounts(n int, mk func(i int) *Account) []*Account {
	out := make([]*Account, n)
	for i := range out {
		out[i] = mk(i)
		if out[i].ID == "" {
			out[i].ID = fmt.Sprintf("a%05d", i)
		}
	}
	return out
}

// countingLimiter reports every account full and counts the attempts.
type countingLimiter struct {
	tries atomic.Int32
	err   error
}

func (l *countingLimiter) TryAcquire(context.Context, string, int) (func(), bool, error) {
	l.tries.Add(1)
	return nil, false, l.err
}

// accountSlots sums the slots the limiter holds for the accounts.
func accountSlots(l concurrency.Counter, ids ...string) int {
	n := 0
	for _, id := range ids {
		n += l.InFlight("account:" + id)
	}
	return n
}
