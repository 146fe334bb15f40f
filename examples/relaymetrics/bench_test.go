package relaymetrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// benchStream relays a 200-event stream (192 deltas and the framing
// events) per request, as the core's BenchmarkStream200 does, with or
// without the metrics wired in (Observer and OnAccountEvent), so the two
// runs differ by their cost only.
func benchStream(b *testing.B, observed bool) {
	up := relaytest.New()
	up.NoLog = true
	up.SetDefault("a", relaytest.Step{Deltas: 192})
	upSrv := httptest.NewServer(up)
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", BaseURL: upSrv.URL + "/a/v1", Concurrency: 1024})
	sched := &scheduler.Scheduler{Pool: pool}
	h := &relay.Handler{
		Scheduler:   sched,
		Credentials: scheduler.StaticKeys{"a": "sk-bench"},
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g", Concurrency: 1024}, nil
		},
	}
	if observed {
		m, err := relaymetrics.New(prometheus.NewRegistry(), relaymetrics.Options{})
		if err != nil {
			b.Fatal(err)
		}
		h.Observer = m.Observer()
		sched.OnAccountEvent = m.OnAccountEvent
	}
	srv := httptest.NewServer(h)
	b.Cleanup(func() {
		srv.Close()
		upSrv.Close()
		h.CloseIdleConnections()
	})

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	const body = `{"model":"gpt-test","stream":true,"input":"hello there"}`
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/responses", strings.NewReader(body))
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

func BenchmarkStreamPlain(b *testing.B)    { benchStream(b, false) }
func BenchmarkStreamObserved(b *testing.B) { benchStream(b, true) }

// BenchmarkObserverTurn is the observer's own share of a turn: the calls
// the relay makes for one served turn (TurnStart, two SlotWaits, Attempt,
// TurnEnd), from parallel goroutines as turns run.
func BenchmarkObserverTurn(b *testing.B) {
	m, err := relaymetrics.New(prometheus.NewRegistry(), relaymetrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	o := m.Observer()
	u := billing.Usage{RequestID: "r", Transport: "http", Model: "gpt-test", AccountID: "a", Status: "completed", Turn: 1, Attempts: 1,
		InputTokens: 12, OutputTokens: 192, FirstTokenMS: 1, DurationMS: 1}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			o.TurnStart(ctx, relay.TurnStart{Transport: "http", Number: 1})
			o.SlotWait(ctx, relay.SlotWait{Kind: relay.SlotUser, Outcome: relay.WaitAcquired, Wait: time.Microsecond})
			o.SlotWait(ctx, relay.SlotWait{Kind: relay.SlotAccount, Outcome: relay.WaitAcquired, Wait: time.Microsecond})
			o.Attempt(ctx, relay.Attempt{N: 1, AccountID: "a", Outcome: relay.AttemptServed, Duration: time.Millisecond})
			o.TurnEnd(ctx, relay.TurnEnd{Usage: u, Recorded: true, Code: 200})
		}
	})
}
