package relaymetrics

import (
	"context"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

// The relay.Observer funcs. Each is a few cached-series updates: no I/O,
// no locks held beyond a map read, no allocation once the series exist.

func (m *Metrics) turnStart(_ context.Context, e relay.TurnStart) context.Context {
	m.startedBy.get(e.Transport).Inc()
	m.inFlight.Inc()
	return nil // keep the turn's context
}

func (m *Metrics) turnEnd(_ context.Context, e relay.TurnEnd) {
	m.inFlight.Dec()
	u := &e.Usage
	model := m.models.label(u.Model)
	m.turnsBy.get(turnKey{transport: u.Transport, model: model, status: u.Status, class: codeClass(e.Code)}).Inc()
	m.turnDurBy.get([2]string{u.Transport, u.Status}).Observe(float64(u.DurationMS) / 1000)
	// -1: no output arrived. 0 is a first token within the millisecond.
	if u.FirstTokenMS >= 0 {
		m.ttftBy.get([2]string{u.AccountID, model}).Observe(float64(u.FirstTokenMS) / 1000)
	}
	// Only an upstream's answer has tokens, and then the turn is recorded:
	// a turn rejected earlier creates no token series.
	if e.Recorded {
		tc := m.tokensBy.get(model)
		addTokens(tc.input, u.InputTokens)
		addTokens(tc.cached, u.CachedInputTokens)
		addTokens(tc.output, u.OutputTokens)
		addTokens(tc.reasoning, u.ReasoningTokens)
	}
}

// addTokens skips zero and negative counts: a counter panics on a
// negative Add, and an upstream could report nonsense.
func addTokens(c interface{ Add(float64) }, n int64) {
	if n > 0 {
		c.Add(float64(n))
	}
}

func (m *Metrics) slotWaited(_ context.Context, e relay.SlotWait) {
	m.slotBy.get([2]string{string(e.Kind), string(e.Outcome)}).Observe(e.Wait.Seconds())
}

func (m *Metrics) attempt(_ context.Context, e relay.Attempt) {
	m.attemptsBy.get([3]string{e.AccountID, string(e.Outcome), string(e.Reason)}).Inc()
	m.attDurBy.get([2]string{e.AccountID, string(e.Outcome)}).Observe(e.Duration.Seconds())
	if e.Outcome == relay.AttemptFailover {
		m.failBy.get([2]string{e.AccountID, string(e.Reason)}).Inc()
	}
	// Rare: no resolved children.
	if e.ContextRebuilt {
		m.rebuilds.WithLabelValues(lv(e.AccountID)...).Inc()
	}
	if e.ItemsRemoved > 0 {
		m.removed.WithLabelValues(lv(e.AccountID)...).Add(float64(e.ItemsRemoved))
	}
}

// OnAccountEvent counts an account health change in
// account_events_total{account,kind}. It has the signature of
// scheduler.Scheduler.OnAccountEvent: set it there, or call it from the
// func set there when that already does something else.
func (m *Metrics) OnAccountEvent(_ context.Context, e scheduler.AccountEvent) {
	m.eventsBy.get([2]string{e.AccountID, e.Kind}).Inc()
}
