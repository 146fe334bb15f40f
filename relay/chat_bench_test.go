package relay_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
)

// BenchmarkChatStream200 relays a 200-event stream that the relay
// translates from a Chat Completions account's chunks (196 data: lines);
// BenchmarkChatStream200Direct reads those chunks from the upstream
// itself. The difference is the relay's cost, translation included.
func BenchmarkChatStream200(b *testing.B) {
	srv, _ := benchChatRelay(b)
	runRequests(b, srv.URL+"/v1/responses", streamReq)
}

func BenchmarkChatStream200Direct(b *testing.B) {
	_, up := benchChatRelay(b)
	runRequests(b, up.URL+"/a/v1/chat/completions", `{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`)
}

func benchChatRelay(b *testing.B) (relaySrv, upSrv *httptest.Server) {
	up := relaytest.New()
	up.NoLog = true
	up.SetDefault("a", relaytest.Step{Deltas: 192})
	upSrv = httptest.NewServer(up)
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", BaseURL: upSrv.URL + "/a/v1", Concurrency: 1024, WireAPI: "chat"})
	h := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"a": "sk-bench"},
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g", Concurrency: 1024}, nil
		},
	}
	relaySrv = httptest.NewServer(h)
	b.Cleanup(func() {
		relaySrv.Close()
		upSrv.Close()
		h.CloseIdleConnections()
	})
	return relaySrv, upSrv
}
