package relay_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// benchTurns runs b.N turns of deltas events each on one connection to url.
func benchTurns(b *testing.B, url string, deltas int) {
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer sk-bench"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.CloseNow()
	msg := []byte(create(``))
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		if err := ws.Write(ctx, websocket.MessageText, msg); err != nil {
			b.Fatal(err)
		}
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				b.Fatal(err)
			}
			events++
			if t := gjson.GetBytes(data, "type").String(); t == "response.completed" {
				break
			} else if t == "error" || t == "response.failed" {
				b.Fatalf("turn failed: %s", data)
			}
		}
	}
	b.ReportMetric(float64(events)/float64(b.N), "events/turn")
}

func benchUpstream(b *testing.B, deltas int) (*relaytest.Upstream, *httptest.Server) {
	up := relaytest.New()
	up.NoLog = true
	up.SetDefault("a", relaytest.Step{Deltas: deltas})
	srv := httptest.NewServer(up)
	b.Cleanup(srv.Close)
	return up, srv
}

// BenchmarkWSTurn200 is a 200-event turn through the relay's WebSocket mode
// (pinned upstream socket); compare with BenchmarkWSTurn200Direct.
func BenchmarkWSTurn200(b *testing.B) {
	_, upSrv := benchUpstream(b, 192)
	pool := scheduler.NewStaticPool()
	pool.Add("g", &scheduler.Account{ID: "a", BaseURL: upSrv.URL + "/a/v1", Concurrency: 64, WebSocket: true})
	rh := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"a": "sk-bench"},
		Logger:      slog.New(slog.DiscardHandler),
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u", APIKeyID: "k", GroupID: "g"}, nil
		},
		WebSocket: &relay.WebSocketOptions{},
	}
	srv := httptest.NewServer(rh)
	b.Cleanup(func() {
		rh.Shutdown(context.Background())
		srv.Close()
	})
	benchTurns(b, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/responses", 192)
}

func BenchmarkWSTurn200Direct(b *testing.B) {
	_, upSrv := benchUpstream(b, 192)
	benchTurns(b, "ws"+strings.TrimPrefix(upSrv.URL, "http")+"/a/v1/responses", 192)
}
