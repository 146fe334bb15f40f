package relay_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// moneyBody has max_output_tokens, so that its hold covers its cost.
const moneyBody = `{"model":"gpt-test","input":"hello there","max_output_tokens":16}`

// newMoneyEnv: the relay with prices and a MemoryLedger, records settled
// through it, and the key's budget set to cover n holds of moneyBody.
func newMoneyEnv(t *testing.T, n int64) (*env, *billing.MemoryLedger, billing.Limits) {
	e := newEnv(t, "a")
	l := &billing.MemoryLedger{}
	e.h.Prices = gptTestPrices(t)
	e.h.Ledger = l
	e.h.Usage = billing.Settling(l, e.sink)
	in := int64(len(moneyBody)+2) / 3
	hold := (in*1_250_000 + 16*10_000_000 + 500_000) / 1_000_000
	lim := billing.Limits{BudgetMicros: n * hold, Period: billing.PeriodTotal}
	e.subj.KeyLimits = lim
	e.subj.Concurrency = 0 // the budget is what limits these turns
	return e, l, lim
}

// TestLedgerNoOverspend: 50 concurrent turns against a budget covering
// 5 holds: what is settled never exceeds the budget, every refusal is 429
// insufficient_quota, and no refused turn reached the upstream.
func TestLedgerNoOverspend(t *testing.T) {
	e, l, lim := newMoneyEnv(t, 5)
	hold := make(chan struct{})
	e.up.SetDefault("a", relaytest.Step{Hold: hold})
	var wg sync.WaitGroup
	results := make(chan result, 50)
	for range 50 {
		wg.Go(func() { results <- e.do(moneyBody) })
	}
	// Five are held at the upstream; the other 45 were refused.
	waitUntil(t, "the refusals", func() bool { return len(results) == 45 })
	close(hold)
	wg.Wait()
	close(results)
	served := 0
	for r := range results {
		switch r.status {
		case 200:
			served++
		case 429:
			if typ, _, _, code := apiErr(t, r.body); typ != "insufficient_quota" || code != "insufficient_quota" {
				t.Fatalf("refusal %s", r.body)
			}
		default:
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	e.settle()
	if served != 5 || len(e.up.Requests()) != 5 {
		t.Fatalf("%d served, %d upstream requests", served, len(e.up.Requests()))
	}
	var spent int64
	for _, u := range e.sink.all() {
		spent += u.CostMicros
	}
	b, err := l.Balance(context.Background(), e.subj.APIKeyID, lim, time.Now())
	if err != nil || b.Holds != 0 || b.HeldMicros != 0 || b.SpentMicros != spent || spent > lim.BudgetMicros || spent == 0 {
		t.Fatalf("balance %+v (%v), records spent %d, budget %d", b, err, spent, lim.BudgetMicros)
	}
}

// TestLedgerHoldsEndAfterFaults: the client leaves mid-stream, the
// upstream resets before headers on every account: each turn's hold ends
// (settled by its record), and a turn that is debited is debited once.
func TestLedgerHoldsEndAfterFaults(t *testing.T) {
	e, l, lim := newMoneyEnv(t, 100)
	// Mid-stream: the relay drains and records client_gone.
	e.leaveMidStream("a", `{"model":"gpt-test","stream":true,"input":"hello there","max_output_tokens":16}`)
	waitUntil(t, "the usage record", func() bool { return len(e.sink.all()) == 1 })
	// A reset before headers on the only account: reached nothing; its
	// hold is released.
	e.up.Script("a", relaytest.Step{Cut: true})
	if r := e.do(moneyBody); r.status == 200 {
		t.Fatalf("served: %s", r.body)
	}
	e.settle()
	recs := e.sink.all()
	var spent int64
	for _, u := range recs {
		spent += u.CostMicros
	}
	b, _ := l.Balance(context.Background(), e.subj.APIKeyID, lim, time.Now())
	if b.Holds != 0 || b.SpentMicros != spent || recs[0].Status != billing.StatusClientGone || recs[0].CostMicros == 0 {
		t.Fatalf("balance %+v, records %+v", b, recs)
	}
	// A record replayed (a spool after a crash) settles nothing more.
	if err := e.h.Usage.Record(context.Background(), recs[0]); err != nil {
		t.Fatal(err)
	}
	if b2, _ := l.Balance(context.Background(), e.subj.APIKeyID, lim, time.Now()); b2.SpentMicros != b.SpentMicros {
		t.Fatalf("a replayed record was debited again: %d then %d", b.SpentMicros, b2.SpentMicros)
	}
}
