package relay_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// fakeLedger records what the relay asks of a Ledger; hold decides each
// Hold (nil: admit with fixed remaining figures).
type fakeLedger struct {
	mu       sync.Mutex
	holds    []billing.Request
	settled  []billing.Usage
	released []string
	hold     func(ctx context.Context, q billing.Request) error
}

func (l *fakeLedger) Hold(ctx context.Context, q billing.Request) (billing.Remaining, error) {
	if l.hold != nil {
		if err := l.hold(ctx, q); err != nil {
			return billing.Remaining{}, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holds = append(l.holds, q)
	return billing.Remaining{Requests: 59, Tokens: -1, BudgetMicros: 4_250_000}, nil
}

func (l *fakeLedger) Settle(_ context.Context, u billing.Usage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled = append(l.settled, u)
	return nil
}

func (l *fakeLedger) Release(_ context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = append(l.released, id)
	return nil
}

func (l *fakeLedger) state() (holds []billing.Request, settled []billing.Usage, released []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]billing.Request(nil), l.holds...), append([]billing.Usage(nil), l.settled...), append([]string(nil), l.released...)
}

// gptTestPrices: $1.25 per 1M input, $0.125 cached, $10 output.
func gptTestPrices(t *testing.T) *billing.Prices {
	p, err := billing.NewPrices(map[string]billing.Price{"gpt-test": {Input: 1_250_000, CachedInput: 125_000, Output: 10_000_000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newLedgerEnv: one account "a", the fake ledger, and the sink settling
// through it, as billing.Settling puts it.
func newLedgerEnv(t *testing.T) (*env, *fakeLedger) {
	e := newEnv(t, "a")
	l := &fakeLedger{}
	e.h.Ledger = l
	e.h.Prices = gptTestPrices(t)
	e.h.Usage = billing.Settling(l, e.sink)
	return e, l
}

// TestLedgerHoldSettle: the hold carries the turn's id and estimate
// before the upstream call; the record carries the exact cost and settles
// once; nothing is released; the answer says what the key has left.
func TestLedgerHoldSettle(t *testing.T) {
	for _, body := range []string{
		`{"model":"gpt-test","input":"hello there","max_output_tokens":100}`,
		`{"model":"gpt-test","stream":true,"input":"hello there","max_output_tokens":100}`,
	} {
		e, l := newLedgerEnv(t)
		r := e.do(body)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if r.header.Get("X-Ratelimit-Remaining-Requests") != "59" || r.header.Get("X-Relay-Budget-Remaining-Micros") != "4250000" ||
			r.header.Get("X-Ratelimit-Remaining-Tokens") != "" {
			t.Fatalf("headers %v", r.header)
		}
		holds, settled, released := l.state()
		recs := e.sink.all()
		if len(holds) != 1 || len(settled) != 1 || len(released) != 0 || len(recs) != 1 {
			t.Fatalf("holds %d, settled %d, released %v, records %d", len(holds), len(settled), released, len(recs))
		}
		q, u := holds[0], recs[0]
		in := int64(len(body)+2) / 3
		// (in·1.25 + 100·10) micro-USD, rounded half up.
		wantHold := (in*1_250_000 + 100*10_000_000 + 500_000) / 1_000_000
		if q.RequestID != u.RequestID || q.HoldTokens != in+100 || q.HoldMicros != wantHold || q.APIKeyID != u.APIKeyID || q.Now.IsZero() {
			t.Fatalf("hold %+v (want %d micros, %d tokens), record %s", q, wantHold, in+100, u.RequestID)
		}
		want := ((u.InputTokens-u.CachedInputTokens)*1_250_000 + u.CachedInputTokens*125_000 + u.OutputTokens*10_000_000 + 500_000) / 1_000_000
		if u.CostMicros != want || u.CostMicros == 0 || settled[0].CostMicros != want || settled[0].RequestID != u.RequestID {
			t.Fatalf("cost %d, want %d; settled %+v", u.CostMicros, want, settled[0])
		}
		if n := len(e.up.Requests()); n != 1 {
			t.Fatalf("%d upstream requests", n)
		}
	}
}

// TestLedgerDenialBeforeUpstream: a spent budget is 429
// insufficient_quota, a rate limit 429 rate_limit_exceeded with
// Retry-After, a failing ledger 503; none reaches an upstream or writes a
// record.
func TestLedgerDenialBeforeUpstream(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		status     int
		typ, code  string
		retryAfter string
	}{
		{"budget", &billing.Denial{Message: "The API key's budget is spent"}, 429, "insufficient_quota", "insufficient_quota", ""},
		{"rpm", &billing.Denial{Status: 429, Type: "requests", Code: "rate_limit_exceeded", Message: "Rate limit reached", RetryAfter: 1500 * time.Millisecond},
			429, "requests", "rate_limit_exceeded", "2"},
		{"ledger down", errors.New("redis: connection refused"), 503, "server_error", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, l := newLedgerEnv(t)
			l.hold = func(context.Context, billing.Request) error { return c.err }
			r := e.do(textReq)
			typ, msg, _, code := apiErr(t, r.body)
			if r.status != c.status || typ != c.typ || code != c.code || r.header.Get("Retry-After") != c.retryAfter {
				t.Fatalf("status %d, %s/%s, Retry-After %q: %s", r.status, typ, code, r.header.Get("Retry-After"), r.body)
			}
			if strings.Contains(msg, "redis") {
				t.Fatalf("the ledger's error reached the client: %s", msg)
			}
			if n := len(e.up.Requests()); n != 0 {
				t.Fatalf("%d upstream requests", n)
			}
			if recs := e.sink.all(); len(recs) != 0 {
				t.Fatalf("records %+v", recs)
			}
		})
	}
}

// TestLedgerReleaseWithoutUpstream: a turn held but never sent (no
// account serves the model; the client leaves while waiting for an
// account) is released, not settled.
func TestLedgerReleaseWithoutUpstream(t *testing.T) {
	t.Run("no account", func(t *testing.T) {
		e, l := newLedgerEnv(t)
		e.h.Prices = nil
		e.pool.Set("g", []*scheduler.Account{{ID: "a", BaseURL: e.up.BaseURL("a"), Models: []string{"gpt-*"}}})
		if r := e.do(`{"model":"o-none","input":"x"}`); r.status == 200 {
			t.Fatalf("served: %s", r.body)
		}
		e.settle()
		holds, settled, released := l.state()
		if len(holds) != 1 || len(settled) != 0 || len(released) != 1 || released[0] != holds[0].RequestID {
			t.Fatalf("holds %d, settled %d, released %v", len(holds), len(settled), released)
		}
	})
	t.Run("client gone while queued", func(t *testing.T) {
		e, l := newLedgerEnv(t)
		e.pool.Set("g", []*scheduler.Account{{ID: "a", BaseURL: e.up.BaseURL("a"), Concurrency: 1}})
		release, first := e.holdOne()
		cancel, done := e.abandonable(textReq)
		waitUntil(t, "the second turn to hold", func() bool { h, _, _ := l.state(); return len(h) == 2 })
		cancel()
		<-done
		e.waitGone(1)
		release()
		<-first
		e.settle()
		holds, settled, released := l.state()
		if len(released) != 1 || released[0] != holds[1].RequestID || len(settled) != 1 || settled[0].RequestID != holds[0].RequestID {
			t.Fatalf("holds %v, settled %+v, released %v", holds, settled, released)
		}
	})
}

// TestLedgerAllAccountsRefuse: every account answers 429: the upstream
// was reached, so the turn's record (cost zero) settles the hold.
func TestLedgerAllAccountsRefuse(t *testing.T) {
	e, l := newLedgerEnv(t)
	e.addAccount(&scheduler.Account{ID: "b"})
	e.up.Script("a", relaytest.Step{Status: 429})
	e.up.Script("b", relaytest.Step{Status: 429})
	if r := e.do(textReq); r.status != 429 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	e.settle()
	_, settled, released := l.state()
	if len(settled) != 1 || settled[0].CostMicros != 0 || settled[0].Status != billing.StatusUpstreamError || len(released) != 0 {
		t.Fatalf("settled %+v, released %v", settled, released)
	}
}

// TestLedgerHoldTimeout: a Hold that outlives HookTimeout refuses the
// turn, and the hold it then makes is released.
func TestLedgerHoldTimeout(t *testing.T) {
	e, l := newLedgerEnv(t)
	e.h.HookTimeout = 50 * time.Millisecond
	unblock := make(chan struct{})
	l.hold = func(ctx context.Context, q billing.Request) error { <-unblock; return nil }
	r := e.do(textReq)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	close(unblock)
	waitUntil(t, "the late hold to be released", func() bool { _, _, rel := l.state(); return len(rel) == 1 })
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("%d upstream requests", n)
	}
	holds, _, released := l.state()
	if len(holds) != 1 || released[0] != holds[0].RequestID {
		t.Fatalf("holds %+v, released %v", holds, released)
	}
}

// TestUnpricedModel: RefuseUnpriced answers 400 model_not_priced before
// anything; otherwise the turn costs zero and the model is logged once.
func TestUnpricedModel(t *testing.T) {
	e, l := newLedgerEnv(t)
	p, _ := billing.NewPrices(map[string]billing.Price{"gpt-other": {Input: 1, Output: 1}}, nil)
	p.RefuseUnpriced = true
	e.h.Prices = p
	r := e.do(textReq)
	typ, _, param, code := apiErr(t, r.body)
	if r.status != 400 || typ != "invalid_request_error" || param != "model" || code != "model_not_priced" {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if holds, _, _ := l.state(); len(holds) != 0 || len(e.up.Requests()) != 0 {
		t.Fatalf("an unpriced turn was held or sent")
	}

	e2 := newEnv(t, "a")
	p2, _ := billing.NewPrices(map[string]billing.Price{"gpt-other": {Input: 1, Output: 1}}, nil)
	e2.h.Prices = p2
	for range 3 {
		if r := e2.do(textReq); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	e2.settle()
	for _, u := range e2.sink.all() {
		if u.CostMicros != 0 {
			t.Fatalf("cost %d", u.CostMicros)
		}
	}
	if n := strings.Count(e2.logs.String(), "model has no price"); n != 1 {
		t.Fatalf("logged %d times", n)
	}
}
