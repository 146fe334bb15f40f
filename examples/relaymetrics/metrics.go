package relaymetrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaykit/responsesrelay/relay"
)

// DefaultNamespace prefixes every metric name when Options.Namespace is "".
const DefaultNamespace = "responsesrelay"

// DefaultMaxModels is how many distinct model names get a label value of
// their own when Options.MaxModels is 0.
const DefaultMaxModels = 64

// Options configures the metrics. The zero value is ready to use.
type Options struct {
	// Namespace prefixes every metric name ("responsesrelay_turns_total").
	// "": DefaultNamespace.
	Namespace string

	// ConstLabels are added to every series (an instance or region name).
	ConstLabels prometheus.Labels

	// Models, when non-empty, lists the model names that get a label value
	// of their own; every other model is counted as OtherModel. Entries are
	// exact names. With Models set, MaxModels is ignored.
	Models []string

	// MaxModels bounds the distinct model label values when Models is
	// empty: the first MaxModels names seen keep their own value, later
	// ones become OtherModel. Model names are chosen by clients, so without
	// a bound one client could create any number of series. 0:
	// DefaultMaxModels (64); negative: every model is OtherModel.
	MaxModels int

	// TurnBuckets are the histogram buckets, in seconds, of turn and
	// attempt durations. nil: 5 ms to about 22 minutes.
	TurnBuckets []float64
	// TTFTBuckets are the buckets, in seconds, of the time to first token.
	// nil: 50 ms to about 7 minutes.
	TTFTBuckets []float64
	// SlotWaitBuckets are the buckets, in seconds, of slot waits. nil:
	// 100 µs to about 100 s.
	SlotWaitBuckets []float64
}

// Label values used in place of unbounded or missing ones.
const (
	OtherModel = "other" // a model beyond Options.Models or Options.MaxModels
	NoModel    = "none"  // the turn ended before its body named a model
)

// Metrics holds the relay's Prometheus metrics. Create it with New; its
// methods are safe for concurrent use.
type Metrics struct {
	reg       prometheus.Registerer
	namespace string
	constants prometheus.Labels
	models    *modelLabels
	obs       *relay.Observer

	turnsStarted *prometheus.CounterVec   // transport
	turns        *prometheus.CounterVec   // transport, model, status, code_class
	turnDuration *prometheus.HistogramVec // transport, status
	inFlight     prometheus.Gauge
	attempts     *prometheus.CounterVec   // account, outcome, reason
	attemptDur   *prometheus.HistogramVec // account, outcome
	failovers    *prometheus.CounterVec   // account, reason
	ttft         *prometheus.HistogramVec // account, model
	tokens       *prometheus.CounterVec   // model, kind
	slotWait     *prometheus.HistogramVec // kind, outcome
	events       *prometheus.CounterVec   // account, kind
	rebuilds     *prometheus.CounterVec   // account
	removed      *prometheus.CounterVec   // account

	// Resolved children, so that the hot path does no label hashing.
	startedBy  children[string, prometheus.Counter]
	turnsBy    children[turnKey, prometheus.Counter]
	turnDurBy  children[[2]string, prometheus.Observer]
	attemptsBy children[[3]string, prometheus.Counter]
	attDurBy   children[[2]string, prometheus.Observer]
	failBy     children[[2]string, prometheus.Counter]
	ttftBy     children[[2]string, prometheus.Observer]
	tokensBy   children[string, *tokenCounters]
	slotBy     children[[2]string, prometheus.Observer]
	eventsBy   children[[2]string, prometheus.Counter]
}

type turnKey struct{ transport, model, status, class string }

// tokenCounters are the four token kinds of one model.
type tokenCounters struct{ input, cached, output, reasoning prometheus.Counter }

// New creates the metrics and registers them with reg
// (prometheus.DefaultRegisterer when nil). It fails when a metric of the
// same name is already registered there, e.g. by a second Metrics with the
// same Namespace.
func New(reg prometheus.Registerer, o Options) (*Metrics, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := &Metrics{reg: reg, namespace: o.Namespace, constants: o.ConstLabels, models: newModelLabels(o.Models, o.MaxModels)}
	if m.namespace == "" {
		m.namespace = DefaultNamespace
	}
	turnBuckets := orBuckets(o.TurnBuckets, prometheus.ExponentialBuckets(0.005, 2, 19))      // 5 ms .. ~22 min
	ttftBuckets := orBuckets(o.TTFTBuckets, prometheus.ExponentialBuckets(0.05, 2, 14))       // 50 ms .. ~6.8 min
	waitBuckets := orBuckets(o.SlotWaitBuckets, prometheus.ExponentialBuckets(0.0001, 4, 11)) // 100 µs .. ~105 s

	m.turnsStarted = m.counter("turns_started_total", "Turns that arrived, before authentication.", "transport")
	m.turns = m.counter("turns_total", "Turns that ended, by usage status (or error, client_gone) and the class of the HTTP status answered.",
		"transport", "model", "status", "code_class")
	m.turnDuration = m.histogram("turn_duration_seconds", "Duration of a turn, from arrival to the end of the answer.", turnBuckets, "transport", "status")
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: m.namespace, Name: "turns_in_flight",
		Help: "Turns being served.", ConstLabels: m.constants})
	m.attempts = m.counter("attempts_total", "Upstream attempts, by outcome and failure reason.", "account", "outcome", "reason")
	m.attemptDur = m.histogram("attempt_duration_seconds", "Duration of an upstream attempt, to the end of its stream.", turnBuckets, "account", "outcome")
	m.failovers = m.counter("failovers_total", "Attempts that failed before any output and moved the turn to another account.", "account", "reason")
	m.ttft = m.histogram("time_to_first_token_seconds", "Time from the arrival of a turn to its first output event.", ttftBuckets, "account", "model")
	m.tokens = m.counter("tokens_total", "Tokens of recorded turns, by kind: input, cached_input, output, reasoning.", "model", "kind")
	m.slotWait = m.histogram("slot_wait_seconds", "Waits for a user slot or an account (selection included).", waitBuckets, "kind", "outcome")
	m.events = m.counter("account_events_total", "Account health changes reported by the scheduler.", "account", "kind")
	m.rebuilds = m.counter("context_rebuilds_total", "Attempts that sent a previous_response_id chain whole, rebuilt from the relay's records, to an account that did not hold it.", "account")
	m.removed = m.counter("encrypted_items_removed_total", "Reasoning items left out of attempts' input because the account could not decrypt them.", "account")

	cs := []prometheus.Collector{m.turnsStarted, m.turns, m.turnDuration, m.inFlight, m.attempts, m.attemptDur,
		m.failovers, m.ttft, m.tokens, m.slotWait, m.events, m.rebuilds, m.removed}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	m.initChildren()
	m.obs = &relay.Observer{
		TurnStart: m.turnStart,
		SlotWait:  m.slotWaited,
		Attempt:   m.attempt,
		TurnEnd:   m.turnEnd,
	}
	return m, nil
}

// Observer returns the observer to set as relay.Handler.Observer; the
// handler's WebSocket turns are observed too (transport "ws"). It is the same value on every call.
func (m *Metrics) Observer() *relay.Observer { return m.obs }

func (m *Metrics) counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: m.namespace, Name: name, Help: help, ConstLabels: m.constants}, labels)
}

func (m *Metrics) histogram(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: m.namespace, Name: name, Help: help,
		ConstLabels: m.constants, Buckets: buckets}, labels)
}

func orBuckets(b, def []float64) []float64 {
	if len(b) == 0 {
		return def
	}
	return b
}

func (m *Metrics) initChildren() {
	m.startedBy.create = func(tr string) prometheus.Counter { return m.turnsStarted.WithLabelValues(lv(tr)...) }
	m.turnsBy.create = func(k turnKey) prometheus.Counter {
		return m.turns.WithLabelValues(lv(k.transport, k.model, k.status, k.class)...)
	}
	m.turnDurBy.create = func(k [2]string) prometheus.Observer { return m.turnDuration.WithLabelValues(lv(k[:]...)...) }
	m.attemptsBy.create = func(k [3]string) prometheus.Counter { return m.attempts.WithLabelValues(lv(k[:]...)...) }
	m.attDurBy.create = func(k [2]string) prometheus.Observer { return m.attemptDur.WithLabelValues(lv(k[:]...)...) }
	m.failBy.create = func(k [2]string) prometheus.Counter { return m.failovers.WithLabelValues(lv(k[:]...)...) }
	m.ttftBy.create = func(k [2]string) prometheus.Observer { return m.ttft.WithLabelValues(lv(k[:]...)...) }
	m.tokensBy.create = func(model string) *tokenCounters {
		model = labelValue(model)
		return &tokenCounters{
			input:     m.tokens.WithLabelValues(model, "input"),
			cached:    m.tokens.WithLabelValues(model, "cached_input"),
			output:    m.tokens.WithLabelValues(model, "output"),
			reasoning: m.tokens.WithLabelValues(model, "reasoning"),
		}
	}
	m.slotBy.create = func(k [2]string) prometheus.Observer { return m.slotWait.WithLabelValues(lv(k[:]...)...) }
	m.eventsBy.create = func(k [2]string) prometheus.Counter { return m.events.WithLabelValues(lv(k[:]...)...) }
}

// lv makes label values valid (see labelValue), when a series is made.
func lv(vals ...string) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = labelValue(v)
	}
	return out
}

// errNilScheduler is WatchScheduler's answer to a nil scheduler.
var errNilScheduler = errors.New("relaymetrics: WatchScheduler needs a scheduler")
