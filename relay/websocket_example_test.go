package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// Serve the WebSocket mode beside POST on one path and run one turn.
func ExampleWebSocketOptions() {
	upstream := relaytest.NewServer()
	defer upstream.Close()
	pool := scheduler.NewStaticPool()
	pool.Add("default", &scheduler.Account{ID: "a1", BaseURL: upstream.BaseURL("a1"), Concurrency: 4, WebSocket: true})
	rh := &relay.Handler{
		Scheduler:   &scheduler.Scheduler{Pool: pool},
		Credentials: scheduler.StaticKeys{"a1": "sk-upstream"},
		Authenticate: func(*http.Request) (*relay.Subject, error) {
			return &relay.Subject{UserID: "u1", APIKeyID: "key-1", GroupID: "default"}, nil
		},
		WebSocket: &relay.WebSocketOptions{}, // the defaults
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/responses", rh) // POST, and a GET upgrade: WebSocket mode
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer rh.Shutdown(context.Background())

	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/responses", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.CloseNow()
	ws.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5","input":"hi"}`))
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		if t := gjson.GetBytes(data, "type").String(); t == "response.completed" {
			fmt.Println(t, gjson.GetBytes(data, "response.status"))
			return
		}
	}
	// Output: response.completed completed
}
