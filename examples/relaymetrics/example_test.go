package relaymetrics_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relaykit/responsesrelay/examples/relaymetrics"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// Wire the metrics into a relay and its scheduler, serve them on /metrics,
// and read them after one turn.
func Example() {
	upstream := relaytest.NewServer() // stands in for the real upstream
	defer upstream.Close()

	reg := prometheus.NewRegistry() // or prometheus.DefaultRegisterer
	metrics, err := relaymetrics.New(reg, relaymetrics.Options{})
	if err != nil {
		panic(err)
	}
	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "acct-1", BaseURL: upstream.BaseURL("acct-1"), Concurrency: 4})
	sched := &scheduler.Scheduler{Pool: pool, OnAccountEvent: metrics.OnAccountEvent}
	if err := metrics.WatchScheduler(sched); err != nil {
		panic(err)
	}
	h := &relay.Handler{
		Scheduler:   sched,
		Credentials: scheduler.StaticKeys{"acct-1": "sk-upstream-key"},
		Observer:    metrics.Observer(),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u1", APIKeyID: "key-1", GroupID: "default"}, nil
		},
	}
	defer h.CloseIdleConnections()
	mux := http.NewServeMux()
	mux.Handle("POST /v1/responses", h)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := srv.Client().Post(srv.URL+"/v1/responses", "application/json",
		strings.NewReader(`{"model":"gpt-5","input":"Say hi"}`))
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h.Shutdown(context.Background()) // the turn's last metrics are in once it is over

	resp, err = srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "responsesrelay_turns_total") ||
			strings.HasPrefix(line, "responsesrelay_account_limit") {
			fmt.Println(line)
		}
	}
	// Output:
	// responsesrelay_account_limit{account="acct-1"} 4
	// responsesrelay_turns_total{code_class="2xx",model="gpt-5",status="completed",transport="http"} 1
}
