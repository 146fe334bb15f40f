package relaymetrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/internal/relayenv"
	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a relay with the metrics wired in as a host would, in front of
// the fake upstream.
type env struct {
	*relayenv.Env
	reg *prometheus.Registry
	m   *relaymetrics.Metrics
}

// newEnv serves accounts (in group "g", BaseURL set to the fake) with
// metrics made with o, the scheduler watched.
func newEnv(t *testing.T, o relaymetrics.Options, accounts ...*scheduler.Account) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry()}
	m, err := relaymetrics.New(e.reg, o)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	e.Env = relayenv.New(t, func(h *relay.Handler) {
		h.Observer = m.Observer()
		h.Scheduler.OnAccountEvent = m.OnAccountEvent
	}, accounts...)
	if err := m.WatchScheduler(e.Sched); err != nil {
		t.Fatal(err)
	}
	return e
}

// do sends body, reads the whole answer and waits for the turn to end.
func (e *env) do(body string) (int, string) {
	e.T.Helper()
	resp, b := e.Do(body, relayenv.ClientKey)
	return resp.StatusCode, string(b)
}

// value sums the series of the family namespace_name whose labels include
// the given name/value pairs: counters and gauges by value, histograms by
// sample count. found is false when no series matched.
func value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (sum float64, found bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != relaymetrics.DefaultNamespace+"_"+name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum, found
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == pairs[i] && lp.GetValue() == pairs[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// want checks value(name, labels) == n; n 0 also accepts no series.
func (e *env) want(n float64, name string, labels ...string) {
	e.T.Helper()
	wantValue(e.T, e.reg, n, name, labels...)
}

func wantValue(t testing.TB, g prometheus.Gatherer, n float64, name string, labels ...string) {
	t.Helper()
	got, found := value(t, g, name, labels...)
	if got != n || (!found && n != 0) {
		t.Errorf("%s%v = %v (found %v), want %v; the family:\n%s", name, labels, got, found, n, family(t, g, name))
	}
}

const streamReq = `{"model":"gpt-test","stream":true,"input":"hello there"}`

// family renders the series of namespace_name, for failure messages.
func family(t testing.TB, g prometheus.Gatherer, name string) string {
	mfs, err := g.Gather()
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, mf := range mfs {
		if mf.GetName() == relaymetrics.DefaultNamespace+"_"+name {
			expfmt.MetricFamilyToText(&b, mf)
		}
	}
	return b.String()
}
