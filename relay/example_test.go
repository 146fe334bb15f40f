package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// Mount the relay in front of one upstream account (here the fake upstream)
// and send it a request as a client would.
func Example() {
	upstream := relaytest.NewServer()
	defer upstream.Close()

	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "acct-1", BaseURL: upstream.BaseURL("acct-1"), Concurrency: 4})
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"acct-1": "sk-upstream-key"},
		Authenticate: func(r *http.Request) (*relay.Subject, error) {
			if r.Header.Get("Authorization") != "Bearer rk-demo" {
				return nil, nil // 401
			}
			return &relay.Subject{UserID: "u1", APIKeyID: "key-1", GroupID: "default", Concurrency: 2}, nil
		},
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/responses", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/v1/responses", strings.NewReader(`{"model":"gpt-5","input":"Say hi"}`))
	req.Header.Set("Authorization", "Bearer rk-demo")
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	fmt.Println(resp.StatusCode, gjson.GetBytes(body, "status"), gjson.GetBytes(body, "model"))
	// Output: 200 completed gpt-5
}

// Watch turns through an Observer: here a failover from an account that
// answers 429 to one that serves. Real hosts feed a metrics or tracing
// library (see examples/relaymetrics and examples/relaytrace).
func ExampleObserver() {
	upstream := relaytest.NewServer()
	defer upstream.Close()
	upstream.Script("busy", relaytest.Step{Status: 429})

	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "busy", BaseURL: upstream.BaseURL("busy"), Priority: 0})
	pool.Add("default", &scheduler.Account{ID: "spare", BaseURL: upstream.BaseURL("spare"), Priority: 1})
	var lines []string // calls come one at a time, on the turn's goroutine
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"busy": "sk-busy", "spare": "sk-spare"},
		Logger:      slog.New(slog.DiscardHandler),
		Observer: &relay.Observer{
			Attempt: func(_ context.Context, e relay.Attempt) {
				lines = append(lines, fmt.Sprintf("attempt %d on %s: %s %s %d", e.N, e.AccountID, e.Outcome, e.Reason, e.Status))
			},
			TurnEnd: func(_ context.Context, e relay.TurnEnd) {
				lines = append(lines, fmt.Sprintf("turn: %s, %d attempts, %d output tokens", e.Usage.Status, e.Usage.Attempts, e.Usage.OutputTokens))
			},
		},
	}
	ctx := relay.WithSubject(context.Background(), &relay.Subject{UserID: "u1", GroupID: "default"})
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/responses", strings.NewReader(`{"model":"gpt-5","input":"Say hi"}`))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	h.CloseIdleConnections()

	fmt.Println(rec.Code)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// 200
	// attempt 1 on busy: failover status 429
	// attempt 2 on spare: served  200
	// turn: completed, 2 attempts, 5 output tokens
}
