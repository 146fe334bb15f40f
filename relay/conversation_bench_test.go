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
	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// BenchmarkStream200NoRecords is BenchmarkStream200 with conversation
// records off: the difference is what recording a turn costs.
func BenchmarkStream200NoRecords(b *testing.B) {
	srv, _, _ := benchRelayWith(b, 192, func(h *relay.Handler) { h.Conversations = &conversation.Memory{MaxBytes: -1} })
	runRequests(b, srv.URL+"/v1/responses", streamReq)
}

// BenchmarkJSONNoRecords is BenchmarkJSON with conversation records off.
func BenchmarkJSONNoRecords(b *testing.B) {
	srv, _, _ := benchRelayWith(b, 5, func(h *relay.Handler) { h.Conversations = &conversation.Memory{MaxBytes: -1} })
	runRequests(b, srv.URL+"/v1/responses", textReq)
}

// chainBench serves a 20-turn chain on account a, then benchmarks a 21st
// turn continuing it: natively on a, or (moved) rebuilt from the records
// on b while a cools down.
func chainBench(b *testing.B, moved bool) {
	up := relaytest.New()
	up.NoLog = true
	upSrv := httptest.NewServer(up)
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", BaseURL: upSrv.URL + "/a/v1", Concurrency: 1024})
	pool.Add("g", &scheduler.Account{ID: "b", BaseURL: upSrv.URL + "/b/v1", Concurrency: 1024, Priority: 1})
	var last atomic.Pointer[billing.Usage]
	h := &relay.Handler{
		Usage: billing.SinkFunc(func(_ context.Context, u billing.Usage) error {
			last.Store(&u)
			return nil
		}),
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"a": "sk-a", "b": "sk-b"},
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g"}, nil
		},
	}
	srv := httptest.NewServer(h)
	b.Cleanup(func() {
		srv.Close()
		upSrv.Close()
		h.CloseIdleConnections()
	})
	client := srv.Client()
	post := func(body string) []byte {
		resp, err := client.Post(srv.URL+"/v1/responses", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		return out
	}
	prev := ""
	for i := range 20 {
		body := `{"model":"gpt-test","input":"` + strings.Repeat("a question about the design ", 4) + string(rune('a'+i)) + `"`
		if prev != "" {
			body += `,"previous_response_id":"` + prev + `"`
		}
		prev = gjson.GetBytes(post(body+`}`), "id").Str
	}
	if moved {
		up.Script("a", relaytest.Step{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"3600"}}})
		post(`{"model":"gpt-test","input":"bench a"}`)
	}
	next := `{"model":"gpt-test","input":"and then?","previous_response_id":"` + prev + `"}`
	b.ReportAllocs()
	for b.Loop() {
		post(next)
	}
	b.StopTimer()
	want := "a"
	if moved {
		want = "b"
	}
	if u := last.Load(); u.AccountID != want || u.ContextRebuilt != moved {
		b.Fatalf("the 21st turn: %+v", u)
	}
}

// BenchmarkChain20Native continues a 20-turn chain on its own account.
func BenchmarkChain20Native(b *testing.B) { chainBench(b, false) }

// BenchmarkChain20Rebuilt continues a 20-turn chain on another account,
// rebuilt from the records: the difference is the cost of a rebuild.
func BenchmarkChain20Rebuilt(b *testing.B) { chainBench(b, true) }
