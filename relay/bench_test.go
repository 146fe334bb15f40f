package relay_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// benchRelay is a relay over the in-process fake upstream with logging off.
func benchRelay(b *testing.B, deltas int) (relaySrv, upSrv *httptest.Server, up *relaytest.Upstream) {
	return benchRelayObserved(b, deltas, nil)
}

// benchRelayObserved is benchRelay with an Observer on the handler.
func benchRelayObserved(b *testing.B, deltas int, obs *relay.Observer) (relaySrv, upSrv *httptest.Server, up *relaytest.Upstream) {
	return benchRelayWith(b, deltas, func(h *relay.Handler) { h.Observer = obs })
}

// benchRelayWith is benchRelay with the handler adjusted by set (a test
// may use it too).
func benchRelayWith(b testing.TB, deltas int, set func(*relay.Handler)) (relaySrv, upSrv *httptest.Server, up *relaytest.Upstream) {
	up = relaytest.New()
	up.NoLog = true
	up.SetDefault("a", relaytest.Step{Deltas: deltas})
	upSrv = httptest.NewServer(up)
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", BaseURL: upSrv.URL + "/a/v1", Concurrency: 1024})
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"a": "sk-bench"},
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g", Concurrency: 1024}, nil
		},
	}
	if set != nil {
		set(h)
	}
	relaySrv = httptest.NewServer(h)
	b.Cleanup(func() {
		relaySrv.Close()
		upSrv.Close()
		h.CloseIdleConnections()
	})
	return relaySrv, upSrv, up
}

func runRequests(b *testing.B, url, body string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-bench")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n == 0 {
			b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
	}
}

// BenchmarkStream200 relays a 200-event stream; compare allocs/op with
// BenchmarkStream200Direct (the same stream without the relay) to get the
// relay's own allocations per request and per event.
func BenchmarkStream200(b *testing.B) {
	srv, _, _ := benchRelay(b, 192)
	runRequests(b, srv.URL+"/v1/responses", streamReq)
}

func BenchmarkStream200Direct(b *testing.B) {
	_, up, _ := benchRelay(b, 192)
	runRequests(b, up.URL+"/a/v1/responses", streamReq)
}

func BenchmarkJSON(b *testing.B) {
	srv, _, _ := benchRelay(b, 5)
	runRequests(b, srv.URL+"/v1/responses", textReq)
}

func BenchmarkJSONDirect(b *testing.B) {
	_, up, _ := benchRelay(b, 5)
	runRequests(b, up.URL+"/a/v1/responses", textReq)
}

// countingObserver counts every call and sums durations, as a metrics
// adapter would, without a metrics library.
func countingObserver() (*relay.Observer, *[5]atomic.Int64) {
	var n [5]atomic.Int64
	return &relay.Observer{
		TurnStart: func(ctx context.Context, e relay.TurnStart) context.Context { n[0].Add(1); return ctx },
		SlotWait:  func(_ context.Context, e relay.SlotWait) { n[1].Add(int64(e.Wait)) },
		Attempt:   func(_ context.Context, e relay.Attempt) { n[3].Add(int64(e.Duration)) },
		TurnEnd: func(_ context.Context, e relay.TurnEnd) {
			if e.Usage.FirstTokenMS >= 0 {
				n[2].Add(e.Usage.FirstTokenMS)
			}
			n[4].Add(e.Usage.OutputTokens)
		},
	}, &n
}

// BenchmarkStream200Observed is BenchmarkStream200 with every Observer
// hook set: the cost of observing a turn.
func BenchmarkStream200Observed(b *testing.B) {
	obs, n := countingObserver()
	srv, _, _ := benchRelayObserved(b, 192, obs)
	runRequests(b, srv.URL+"/v1/responses", streamReq)
	if n[0].Load() == 0 || n[4].Load() == 0 {
		b.Fatal("the observer was not called")
	}
}

func BenchmarkJSONObserved(b *testing.B) {
	obs, n := countingObserver()
	srv, _, _ := benchRelayObserved(b, 5, obs)
	runRequests(b, srv.URL+"/v1/responses", textReq)
	if n[0].Load() == 0 {
		b.Fatal("the observer was not called")
	}
}

// BenchmarkStream200Money is BenchmarkStream200 with prices, a
// MemoryLedger holding every turn under quotas, and settlement through
// the usage sink: what metering costs a turn.
func BenchmarkStream200Money(b *testing.B) {
	var settled atomic.Int64
	srv, _, _ := benchRelayWith(b, 192, func(h *relay.Handler) {
		prices, err := billing.NewPrices(map[string]billing.Price{"*": {Input: 1_250_000, Output: 10_000_000}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		l := &billing.MemoryLedger{}
		lim := billing.Limits{BudgetMicros: 1 << 60, Period: billing.PeriodDay, RPM: 1 << 40, TPM: 1 << 50}
		h.Prices, h.Ledger = prices, l
		h.Usage = billing.Settling(l, billing.SinkFunc(func(context.Context, billing.Usage) error { settled.Add(1); return nil }))
		h.Authenticate = func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g", Concurrency: 1024, KeyLimits: lim, UserLimits: lim}, nil
		}
	})
	runRequests(b, srv.URL+"/v1/responses", streamReq)
	if settled.Load() == 0 {
		b.Fatal("nothing was settled")
	}
}

// BenchmarkStream200Sink is BenchmarkStream200 with a usage sink, the
// baseline BenchmarkStream200Money adds metering to.
func BenchmarkStream200Sink(b *testing.B) {
	var n atomic.Int64
	srv, _, _ := benchRelayWith(b, 192, func(h *relay.Handler) {
		h.Usage = billing.SinkFunc(func(context.Context, billing.Usage) error { n.Add(1); return nil })
	})
	runRequests(b, srv.URL+"/v1/responses", streamReq)
}
