package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/scheduler"
)

// scriptedSocket is an upstream WebSocket server whose connections run
// serve; it counts the sockets it accepted.
type scriptedSocket struct {
	srv   *httptest.Server
	dials atomic.Int32
}

func newScriptedSocket(t *testing.T, serve func(ctx context.Context, ws *websocket.Conn, n int)) *scriptedSocket {
	s := &scriptedSocket{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		serve(r.Context(), ws, int(s.dials.Add(1)))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// waitRecords waits, bounded, until the sink holds n usage records.
func waitRecords(e *wsEnv, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.sink.WaitLen(ctx, n)
}

// playTurn reads one response.create and answers a three-event turn.
func playTurn(ctx context.Context, ws *websocket.Conn, id string) error {
	if _, _, err := ws.Read(ctx); err != nil {
		return err
	}
	for _, ev := range []string{
		`{"type":"response.created","sequence_number":0,"response":{"id":"` + id + `","object":"response","status":"in_progress","model":"gpt-test","output":[],"usage":null}}`,
		`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"hi"}`,
		`{"type":"response.completed","sequence_number":2,"response":{"id":"` + id + `","object":"response","status":"completed","model":"gpt-test","output":[],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}}`,
	} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(ev)); err != nil {
			return err
		}
	}
	return nil
}

// TestUpstreamClosedBetweenTurns: an upstream that closes its socket after
// a turn (as one closes an idle socket) costs the next turn a new socket
// on the same account, not a failover or a failure counted against it,
// whenever the relay notices the close.
func TestUpstreamClosedBetweenTurns(t *testing.T) {
	e := newWSEnv(t, true)
	closed := make(chan struct{}, 4)
	up := newScriptedSocket(t, func(ctx context.Context, ws *websocket.Conn, n int) {
		if playTurn(ctx, ws, fmt.Sprintf("resp_%d", n)) != nil {
			return
		}
		ws.Close(websocket.StatusGoingAway, "idle")
		closed <- struct{}{}
	})
	e.addAccount(&scheduler.Account{ID: "x", BaseURL: up.srv.URL + "/v1", WebSocket: true})
	e.addAccount(&scheduler.Account{ID: "spare", WebSocket: true, Priority: 1})
	c := e.dial()
	for turn := 1; turn <= 3; turn++ {
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("turn %d: %v", turn, f)
		}
		<-closed
	}
	if n := up.dials.Load(); n != 3 {
		t.Fatalf("%d upstream sockets for 3 turns", n)
	}
	if err := waitRecords(e, 3); err != nil {
		t.Fatal(err) // a turn is recorded just after its terminal frame went out
	}
	recs := e.sink.Records()
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	for i, r := range recs {
		if r.AccountID != "x" || r.Attempts != 1 || r.Status != billing.StatusCompleted || r.ResponseID != fmt.Sprintf("resp_%d", i+1) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	for _, st := range e.sched.Snapshot() {
		if st.ID == "x" && (st.ConsecutiveFailures != 0 || st.LastOutcome != "success") {
			t.Fatalf("account x after idle closes: %+v", st)
		}
	}
}

// TestUpstreamDropsReusedSocket: a kept socket that the upstream drops on
// receiving the next turn, before answering it, is the same stale-socket
// case seen late: the turn is sent once more on a new socket to the same
// account. A new socket that fails so is not retried on it.
func TestUpstreamDropsReusedSocket(t *testing.T) {
	e := newWSEnv(t, true)
	up := newScriptedSocket(t, func(ctx context.Context, ws *websocket.Conn, n int) {
		if n == 1 {
			if playTurn(ctx, ws, "resp_1") != nil {
				return
			}
			ws.Read(ctx) // the second turn's message: dropped unanswered
			return
		}
		if playTurn(ctx, ws, fmt.Sprintf("resp_%d", n)) != nil {
			return
		}
		ws.Read(ctx)
	})
	e.addAccount(&scheduler.Account{ID: "x", BaseURL: up.srv.URL + "/v1", WebSocket: true})
	c := e.dial()
	for turn := 1; turn <= 2; turn++ {
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("turn %d: %v", turn, f)
		}
	}
	if n := up.dials.Load(); n != 2 {
		t.Fatalf("%d upstream sockets, want 2", n)
	}
	if err := waitRecords(e, 2); err != nil {
		t.Fatal(err)
	}
	recs := e.sink.Records()
	if len(recs) != 2 || recs[1].AccountID != "x" || recs[1].Attempts != 1 || recs[1].ResponseID != "resp_2" {
		t.Fatalf("records %+v", recs)
	}

	// A kept socket that the upstream closes with another code than an
	// idle close refused this turn: no second socket for it.
	e3 := newWSEnv(t, true)
	up3 := newScriptedSocket(t, func(ctx context.Context, ws *websocket.Conn, n int) {
		if playTurn(ctx, ws, "resp_1") != nil {
			return
		}
		ws.Read(ctx)
		ws.Close(websocket.StatusPolicyViolation, "not this")
	})
	e3.addAccount(&scheduler.Account{ID: "z", BaseURL: up3.srv.URL + "/v1", WebSocket: true})
	c3 := e3.dial()
	c3.send(create(``))
	if f := c3.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("first turn: %v", f)
	}
	c3.send(create(``))
	if f := c3.recvTurn(); typeOf(last(f)) != "error" {
		t.Fatalf("turn closed with 1008: %v", f)
	}
	if n := up3.dials.Load(); n != 1 {
		t.Fatalf("%d sockets after a 1008 close, want 1", n)
	}

	// A fresh socket dropped the same way is an attempt that failed.
	e2 := newWSEnv(t, true)
	up2 := newScriptedSocket(t, func(ctx context.Context, ws *websocket.Conn, n int) {
		ws.Read(ctx) // never answers
	})
	e2.addAccount(&scheduler.Account{ID: "y", BaseURL: up2.srv.URL + "/v1", WebSocket: true})
	c2 := e2.dial()
	c2.send(create(``))
	if f := c2.recvTurn(); typeOf(last(f)) != "error" {
		t.Fatalf("fresh socket dropped: %v", f)
	}
	if n := up2.dials.Load(); n != 1 {
		t.Fatalf("%d sockets for a fresh socket dropped, want 1", n)
	}
}
