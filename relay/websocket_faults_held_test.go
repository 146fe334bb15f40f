package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

const loopCreated = `{"type":"response.created","sequence_number":0,"response":{"id":"resp_loop","object":"response","status":"in_progress","model":"gpt-test","usage":null}}`

// addLoopAccount adds an account whose upstream answers every turn with
// response.created repeated until the relay hangs up: over an upstream
// WebSocket (ws) or as an SSE stream (the HTTP bridge). done is closed
// when the upstream's handler returned, i.e. the relay cut it.
func (e *wsEnv) addLoopAccount(id string, ws bool, priority int) (done <-chan struct{}) {
	e.t.Helper()
	ch := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(ch)
		if !ws {
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for {
				if _, err := fmt.Fprintf(w, "event: response.created\ndata: %s\n\n", loopCreated); err != nil || rc.Flush() != nil {
					return
				}
			}
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if _, _, err := c.Read(ctx); err != nil { // the response.create
			return
		}
		for {
			if err := c.Write(ctx, websocket.MessageText, []byte(loopCreated)); err != nil {
				return
			}
		}
	}))
	e.t.Cleanup(srv.Close)
	e.addAccount(&scheduler.Account{ID: id, WebSocket: ws, Priority: priority, BaseURL: srv.URL + "/v1"})
	return ch
}

// TestFaultWSRepeatedBootstrap: an upstream that repeats response.created
// before any output is a broken attempt once the held events pass their
// bound: the turn moves to the next account with nothing sent to the
// client, or with no account left ends with one error frame (502); the
// looping upstream is cut. Pinned socket and HTTP bridge alike.
func TestFaultWSRepeatedBootstrap(t *testing.T) {
	for _, ws := range []bool{true, false} {
		t.Run(fmt.Sprintf("ws=%v/failover", ws), func(t *testing.T) {
			e := newWSEnv(t, ws)
			done := e.addLoopAccount("loop", ws, 0)
			e.addAccount(&scheduler.Account{ID: "good", WebSocket: ws, Priority: 1})
			c := e.dial()
			c.send(create(``))
			f := c.recvTurn()
			if typeOf(last(f)) != "response.completed" || strings.Contains(strings.Join(f, ""), "resp_loop") || typeOf(f[0]) != "response.created" {
				t.Fatalf("frames %v", f)
			}
			if err := e.sink.WaitLen(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			if r := e.sink.Records(); len(r) != 1 || r[0].AccountID != "good" || r[0].Attempts != 2 {
				t.Fatalf("records %+v", r)
			}
			relaytestenv.WaitClosed(t, "the looping upstream to be cut", done)
		})
		t.Run(fmt.Sprintf("ws=%v/no other account", ws), func(t *testing.T) {
			e := newWSEnv(t, ws)
			done := e.addLoopAccount("loop", ws, 0)
			c := e.dial()
			c.send(create(``))
			f := c.recvTurn()
			if len(f) != 1 || typeOf(f[0]) != "error" || gjson.Get(f[0], "status").Int() != 502 {
				t.Fatalf("frames %v", f)
			}
			relaytestenv.WaitClosed(t, "the looping upstream to be cut", done)
		})
	}
}
