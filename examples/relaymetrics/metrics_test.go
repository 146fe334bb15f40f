package relaymetrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

func newMetrics(t *testing.T, o relaymetrics.Options) (*relaymetrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := relaymetrics.New(reg, o)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// One turn's calls, made directly as the relay makes them. u nil: a turn
// with no usage record (and no tokens).
func observeTurn(o *relay.Observer, model string, u *billing.Usage) {
	ctx := context.Background()
	if c := o.TurnStart(ctx, relay.TurnStart{RequestID: "r", Transport: "http", Number: 1}); c != nil {
		ctx = c
	}
	o.SlotWait(ctx, relay.SlotWait{Kind: relay.SlotAccount, Wait: 150 * time.Microsecond, Outcome: relay.WaitAcquired})
	o.Attempt(ctx, relay.Attempt{N: 1, AccountID: "a", Outcome: relay.AttemptServed, Duration: time.Second, Status: 200})
	end := relay.TurnEnd{Code: 200}
	if u != nil {
		end.Usage, end.Recorded = *u, true
	}
	end.Usage.RequestID, end.Usage.Transport, end.Usage.Model, end.Usage.AccountID = "r", "http", model, "a"
	end.Usage.Status, end.Usage.Attempts, end.Usage.DurationMS, end.Usage.FirstTokenMS = billing.StatusCompleted, 1, 1000, 300
	o.TurnEnd(ctx, end)
}

func TestObserverDirect(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{})
	observeTurn(m.Observer(), "gpt-x", &billing.Usage{InputTokens: 10, CachedInputTokens: 4, OutputTokens: 7, ReasoningTokens: -3})
	m.OnAccountEvent(context.Background(), scheduler.AccountEvent{AccountID: "a", Kind: scheduler.EventUnauthorized})

	wantValue(t, reg, 1, "turns_total", "transport", "http", "model", "gpt-x", "status", "completed", "code_class", "2xx")
	wantValue(t, reg, 10, "tokens_total", "model", "gpt-x", "kind", "input")
	wantValue(t, reg, 4, "tokens_total", "model", "gpt-x", "kind", "cached_input")
	wantValue(t, reg, 7, "tokens_total", "model", "gpt-x", "kind", "output")
	wantValue(t, reg, 0, "tokens_total", "model", "gpt-x", "kind", "reasoning") // negative: ignored
	wantValue(t, reg, 1, "slot_wait_seconds", "kind", "account", "outcome", "acquired")
	wantValue(t, reg, 1, "time_to_first_token_seconds", "account", "a", "model", "gpt-x")
	wantValue(t, reg, 1, "turn_duration_seconds", "transport", "http", "status", "completed")
	wantValue(t, reg, 1, "account_events_total", "account", "a", "kind", "unauthorized")
	wantValue(t, reg, 0, "turns_in_flight")
}

// A turn that got no output observes no time to first token, and one
// without a usage record creates no token series.
func TestTurnWithoutOutput(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{})
	o := m.Observer()
	end := relay.TurnEnd{Code: 503, ErrorType: "server_error"}
	end.Usage.RequestID, end.Usage.Transport, end.Usage.Model = "r", "http", "gpt-x"
	end.Usage.Status, end.Usage.FirstTokenMS, end.Usage.DurationMS = relay.TurnError, -1, 3
	o.TurnStart(context.Background(), relay.TurnStart{RequestID: "r", Transport: "http", Number: 1})
	o.TurnEnd(context.Background(), end)
	wantValue(t, reg, 1, "turns_total", "model", "gpt-x", "status", relay.TurnError, "code_class", "5xx")
	wantValue(t, reg, 1, "turn_duration_seconds", "status", relay.TurnError)
	wantValue(t, reg, 0, "time_to_first_token_seconds")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasSuffix(mf.GetName(), "tokens_total") && len(mf.GetMetric()) != 0 {
			t.Errorf("%s has %d series after a turn with no record", mf.GetName(), len(mf.GetMetric()))
		}
	}
}

// The default buckets reach from the first slot wait to minute-long turns.
func TestBuckets(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{})
	observeTurn(m.Observer(), "gpt-x", nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bounds := map[string][2]float64{}
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			if h := mm.GetHistogram(); h != nil {
				b := h.GetBucket()
				bounds[mf.GetName()] = [2]float64{b[0].GetUpperBound(), b[len(b)-1].GetUpperBound()}
			}
		}
	}
	check := func(name string, first, last float64) {
		b, ok := bounds["responsesrelay_"+name]
		if !ok || b[0] > first || b[1] < last {
			t.Errorf("%s buckets span %v, want from <= %v to >= %v", name, b, first, last)
		}
	}
	check("slot_wait_seconds", 0.0001, 20)
	check("time_to_first_token_seconds", 0.05, 300)
	check("turn_duration_seconds", 0.005, 600)
	check("attempt_duration_seconds", 0.005, 600)
}

func TestModelAllowlist(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{Models: []string{"gpt-5", "gpt-5-mini"}})
	for _, model := range []string{"gpt-5", "gpt-4o", "gpt-5-mini", "made-up"} {
		observeTurn(m.Observer(), model, nil)
	}
	wantValue(t, reg, 1, "turns_total", "model", "gpt-5")
	wantValue(t, reg, 1, "turns_total", "model", "gpt-5-mini")
	wantValue(t, reg, 2, "turns_total", "model", relaymetrics.OtherModel)
	wantValue(t, reg, 2, "time_to_first_token_seconds", "model", relaymetrics.OtherModel)
}

// Names that would make bad or costly label values are "other", and do
// not use up MaxModels.
func TestModelHostileNames(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{MaxModels: 1})
	for _, model := range []string{"bad\xff\xfe", strings.Repeat("x", 500), "ok"} {
		observeTurn(m.Observer(), model, nil)
	}
	wantValue(t, reg, 1, "turns_total", "model", "ok")
	wantValue(t, reg, 2, "turns_total", "model", relaymetrics.OtherModel)

	m, reg = newMetrics(t, relaymetrics.Options{MaxModels: -1})
	observeTurn(m.Observer(), "gpt-5", nil)
	wantValue(t, reg, 1, "turns_total", "model", relaymetrics.OtherModel)
}

// Invalid UTF-8 in a host-given value (an account id) must not panic in
// the observer or at scrape time.
func TestInvalidAccountID(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{})
	o := m.Observer()
	o.Attempt(context.Background(), relay.Attempt{AccountID: "acct\xff", Outcome: relay.AttemptFailover, Reason: relay.ReasonStatus})
	m.OnAccountEvent(context.Background(), scheduler.AccountEvent{AccountID: "acct\xff", Kind: scheduler.EventRateLimited})
	wantValue(t, reg, 1, "failovers_total", "account", "acct\uFFFD")
	wantValue(t, reg, 1, "account_events_total", "account", "acct\uFFFD")
}

func TestLint(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{})
	observeTurn(m.Observer(), "gpt-x", &billing.Usage{InputTokens: 1})
	m.OnAccountEvent(context.Background(), scheduler.AccountEvent{AccountID: "a", Kind: scheduler.EventRecovered})
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", Concurrency: 2})
	if err := m.WatchScheduler(&scheduler.Scheduler{Pool: pool}, "g"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestNewTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := relaymetrics.New(reg, relaymetrics.Options{}); err != nil {
		t.Fatal(err)
	}
	_, err := relaymetrics.New(reg, relaymetrics.Options{})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("second New on one registry: %v, want AlreadyRegisteredError", err)
	}
	if _, err := relaymetrics.New(reg, relaymetrics.Options{Namespace: "relay2"}); err != nil {
		t.Fatalf("New with another namespace: %v", err)
	}
}

// With groups, WatchScheduler lists accounts before their first turn.
func TestWatchSchedulerGroups(t *testing.T) {
	m, reg := newMetrics(t, relaymetrics.Options{ConstLabels: prometheus.Labels{"instance_name": "test"}})
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", Concurrency: 2})
	pool.Add("g", &scheduler.Account{ID: "b"})
	pool.Add("h", &scheduler.Account{ID: "a", Concurrency: 2})
	s := &scheduler.Scheduler{Pool: pool}
	if err := m.WatchScheduler(s, "g", "h", "missing"); err != nil {
		t.Fatal(err)
	}
	wantValue(t, reg, 2, "account_limit", "account", "a", "instance_name", "test")
	wantValue(t, reg, 0, "account_limit", "account", "b")
	wantValue(t, reg, 0, "account_in_flight", "account", "b")
	wantValue(t, reg, 0, "account_kept_slots", "account", "b")
	wantValue(t, reg, 0, "account_cooling", "account", "b", "reason", "")

	var are prometheus.AlreadyRegisteredError
	if err := m.WatchScheduler(s); !errors.As(err, &are) {
		t.Errorf("second WatchScheduler: %v, want AlreadyRegisteredError", err)
	}
	if err := m.WatchScheduler(nil); err == nil {
		t.Error("WatchScheduler(nil) succeeded")
	}
}

// Once a turn's series exist, observing it allocates nothing.
func TestObserverAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	m, _ := newMetrics(t, relaymetrics.Options{})
	u := &billing.Usage{InputTokens: 10, OutputTokens: 5}
	observeTurn(m.Observer(), "gpt-x", u)
	if n := testing.AllocsPerRun(100, func() { observeTurn(m.Observer(), "gpt-x", u) }); n != 0 {
		t.Errorf("a turn's observer calls allocate %v times, want 0", n)
	}
}
