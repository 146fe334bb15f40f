package relaymetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaykit/responsesrelay/scheduler"
)

// groupTimeout bounds the Pool lookups of one scrape when WatchScheduler
// was given groups.
const groupTimeout = 5 * time.Second

// WatchScheduler registers, with the Metrics' registerer, a collector that
// reads the accounts' state from s at every scrape: per account (label
// account), in-flight turns, the concurrency limit, whether it is cooling
// down and why, the remaining cooldown, the error-rate and TTFT EWMAs and
// the consecutive failures.
//
// With no groups it exports the accounts s has state for
// (Scheduler.Snapshot): those that were selected or observed. With groups
// it exports every account of those groups as the Pool lists them
// (Scheduler.SnapshotGroup), idle ones included, at the cost of Pool calls
// (bounded to 5 s) at each scrape; a group whose lookup fails is left out
// of that scrape.
//
// Watch one scheduler per Metrics: a second call fails with
// prometheus.AlreadyRegisteredError.
func (m *Metrics) WatchScheduler(s *scheduler.Scheduler, groups ...string) error {
	if s == nil {
		return errNilScheduler
	}
	return m.reg.Register(newSchedulerCollector(m.namespace, m.constants, s, groups))
}

// schedulerCollector exports Scheduler snapshots as gauges. They are read
// at scrape time, so the hot path pays nothing for them.
type schedulerCollector struct {
	s      *scheduler.Scheduler
	groups []string

	inFlight, kept, limit, cooling, remaining, errorRate, ttft, failures *prometheus.Desc
}

func newSchedulerCollector(ns string, constants prometheus.Labels, s *scheduler.Scheduler, groups []string) *schedulerCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, append([]string{"account"}, labels...), constants)
	}
	return &schedulerCollector{
		s:         s,
		groups:    append([]string(nil), groups...),
		inFlight:  desc("account_in_flight", "Turns in flight on the account, as its slot limiter counts them."),
		kept:      desc("account_kept_slots", "The account's slots this process keeps after their turns (Scheduler.SlotLinger): held in the limiter, serving no turn."),
		limit:     desc("account_limit", "The account's concurrency limit; 0 is unlimited."),
		cooling:   desc("account_cooling", "1 while the account is cooling down (reason: why), else 0 (reason empty).", "reason"),
		remaining: desc("account_cooldown_remaining_seconds", "Time until the account's cooldown ends; 0 when it is not cooling down."),
		errorRate: desc("account_error_rate", "The account's error-rate EWMA, from 0 to 1."),
		ttft:      desc("account_ttft_seconds", "The account's time-to-first-token EWMA; 0 before any measurement."),
		failures:  desc("account_consecutive_failures", "Failed attempts on the account since its last success."),
	}
}

func (c *schedulerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inFlight, c.kept, c.limit, c.cooling, c.remaining, c.errorRate, c.ttft, c.failures} {
		ch <- d
	}
}

func (c *schedulerCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	if c.s.Now != nil {
		now = c.s.Now()
	}
	seen := map[string]bool{}
	emit := func(states []scheduler.AccountState) {
		for i := range states {
			a := &states[i]
			if seen[a.ID] { // an account in several groups is exported once
				continue
			}
			seen[a.ID] = true
			c.collectAccount(ch, a, now)
		}
	}
	if len(c.groups) == 0 {
		emit(c.s.Snapshot())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	for _, g := range c.groups {
		states, err := c.s.SnapshotGroup(ctx, g)
		if err != nil {
			continue // the scrape shows the other groups; Pool errors are the host's to log
		}
		emit(states)
	}
}

func (c *schedulerCollector) collectAccount(ch chan<- prometheus.Metric, a *scheduler.AccountState, now time.Time) {
	id := labelValue(a.ID)
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{id}, extra...)...)
	}
	gauge(c.inFlight, float64(a.InFlight))
	gauge(c.kept, float64(a.Kept))
	gauge(c.limit, float64(max(a.Limit, 0)))
	if left := a.CoolingUntil.Sub(now); !a.CoolingUntil.IsZero() && left > 0 {
		reason := a.CoolingReason
		if reason == "" {
			reason = "unknown"
		}
		gauge(c.cooling, 1, labelValue(reason))
		gauge(c.remaining, left.Seconds())
	} else {
		gauge(c.cooling, 0, "")
		gauge(c.remaining, 0)
	}
	gauge(c.errorRate, a.ErrorRate)
	gauge(c.ttft, a.TTFT.Seconds())
	gauge(c.failures, float64(a.ConsecutiveFailures))
}
