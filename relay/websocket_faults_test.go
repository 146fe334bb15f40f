package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/relaykit/responsesrelay/scheduler"
	"github.com/tidwall/gjson"
)

// wsURL is the relay's WebSocket endpoint.
func (e *wsEnv) wsURL() string { return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses" }

// dialStatus dials with hdr and returns the handshake answer of a refused
// upgrade (nil client), or the client.
func (e *wsEnv) dialStatus(hdr http.Header) (*client, *http.Response) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, e.wsURL(), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		return nil, resp
	}
	ws.SetReadLimit(64 << 20)
	e.t.Cleanup(func() { ws.CloseNow() })
	return &client{t: e.t, ws: ws}, resp
}

// stuck is a channel hooks block on, ignoring their context; it is closed
// when the test ends so that abandoned hooks exit before the leak check.
func stuck(t *testing.T) <-chan struct{} {
	ch := make(chan struct{})
	t.Cleanup(func() { close(ch) })
	return ch
}

// TestFaultWSUpstreamIdle: an upstream that goes silent mid-turn is cut
// after StreamIdleTimeout; the turn ends with one response.failed
// (stream_timeout), and the connection serves the next turn. Pinned socket
// and HTTP bridge alike.
func TestFaultWSUpstreamIdle(t *testing.T) {
	for _, ws := range []bool{true, false} {
		e := newWSEnv(t, ws, "a")
		e.rh.StreamIdleTimeout = 250 * time.Millisecond
		e.up.Script("a", relaytest.Step{After: 5, Hold: make(chan struct{})})
		c := e.dial()
		c.send(create(``))
		f := c.recvTurn()
		if typeOf(last(f)) != "response.failed" || gjson.Get(last(f), "response.error.code").String() != "stream_timeout" {
			t.Fatalf("ws=%v: frames %v", ws, f)
		}
		if seq := gjson.Get(last(f), "sequence_number").Int(); seq != 5 {
			t.Fatalf("ws=%v: sequence_number %d", ws, seq)
		}
		c.send(create(``))
		if g := c.recvTurn(); typeOf(last(g)) != "response.completed" {
			t.Fatalf("ws=%v: next turn %v", ws, g)
		}
		if err := e.sink.WaitLen(context.Background(), 2); err != nil {
			t.Fatal(err)
		}
		if r := e.sink.Records()[0]; r.Status != billing.StatusUpstreamError {
			t.Fatalf("ws=%v: record %+v", ws, r)
		}
	}
}

// TestFaultWSUpstreamSilentBeforeFirstEvent: an upstream that takes the
// message and never answers is given up after StreamIdleTimeout and the
// turn moves to the next account; the silent attempt is no record.
func TestFaultWSUpstreamSilentBeforeFirstEvent(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	e.rh.StreamIdleTimeout = 250 * time.Millisecond
	e.up.Script("a", relaytest.Step{Hold: make(chan struct{})})
	c := e.dial()
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("frames %v", f)
	}
	if err := e.sink.WaitLen(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if r := e.sink.Records(); len(r) != 1 || r[0].AccountID != "b" || r[0].Attempts != 2 {
		t.Fatalf("records %+v", r)
	}
}

// TestFaultWSUpstreamBadFrames: a frame that is not an event object, and
// one over the read limit, are upstream failures by the normal rules.
func TestFaultWSUpstreamBadFrames(t *testing.T) {
	t.Run("malformed before output", func(t *testing.T) {
		e := newWSEnv(t, true, "a", "b")
		e.up.Script("a", relaytest.Step{Status: 200, Body: "not json at all"})
		c := e.dial()
		c.send(create(``))
		f := c.recvTurn()
		if typeOf(last(f)) != "response.completed" || strings.Contains(strings.Join(f, ""), "not json") {
			t.Fatalf("frames %v", f)
		}
	})
	t.Run("too big after output", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.MaxEventBytes = 4096
		e.up.Script("a", relaytest.Step{EventPadding: 8192})
		c := e.dial()
		c.send(create(``))
		f := c.recvTurn()
		if typeOf(last(f)) != "response.failed" || gjson.Get(last(f), "response.error.code").String() != "upstream_error" {
			t.Fatalf("frames %v", f)
		}
		c.send(create(``))
		if g := c.recvTurn(); typeOf(last(g)) != "response.completed" {
			t.Fatalf("next turn %v", g)
		}
	})
}

// TestFaultWSClientGoneMidStream: the client leaves after some events; the
// turn drains to the end and is recorded with the full usage.
func TestFaultWSClientGoneMidStream(t *testing.T) {
	for _, ws := range []bool{true, false} {
		e := newWSEnv(t, ws, "a")
		resume := make(chan struct{})
		e.up.Script("a", relaytest.Step{After: 6, Hold: resume})
		c := e.dial()
		c.send(create(``))
		for i := 0; i < 6; i++ {
			if _, _, err := c.ws.Read(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// A clean close: once it returns the relay has read the close frame,
		// and no later write to this client can succeed.
		if err := c.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatal(err)
		}
		close(resume)
		if err := e.sink.WaitLen(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		rec := e.sink.Records()[0]
		var served relaytest.Served
		for _, s := range e.up.Served() {
			if s.ResponseID != "" {
				served = s
			}
		}
		if rec.Status != billing.StatusClientGone || served.Status != "completed" || rec.OutputTokens != served.Usage.Output || rec.InputTokens != served.Usage.Input {
			t.Fatalf("ws=%v: record %+v, served %+v", ws, rec, served)
		}
	}
}

// TestFaultWSHooks: host hooks that fail, panic or hang on a WebSocket
// turn: the client gets an error frame (and 1013 when it should come back
// later), or the turn goes on without the hook; no slot stays held.
func TestFaultWSHooks(t *testing.T) {
	const bound = 50 * time.Millisecond
	tryAgain := func(t *testing.T, e *wsEnv, msg string) {
		t.Helper()
		c := e.dial()
		c.send(create(``))
		f := c.recvTurn()
		if typeOf(last(f)) != "error" || gjson.Get(last(f), "status").Int() != 503 || !strings.Contains(gjson.Get(last(f), "error.message").String(), msg) {
			t.Fatalf("frames %v", f)
		}
		if code := c.closeStatus(); code != websocket.StatusTryAgainLater {
			t.Fatalf("close %d", code)
		}
	}
	t.Run("gate error", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.Billing = billing.GateFunc(func(context.Context, billing.Request) error { return errors.New("db down") })
		tryAgain(t, e, "Billing service unavailable")
	})
	t.Run("gate panics", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.Billing = billing.GateFunc(func(context.Context, billing.Request) error { panic("gate bug") })
		tryAgain(t, e, "Billing service unavailable")
	})
	t.Run("gate hangs", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		ch := stuck(t)
		e.rh.HookTimeout = bound
		e.rh.Billing = billing.GateFunc(func(context.Context, billing.Request) error { <-ch; return nil })
		tryAgain(t, e, "Billing service unavailable")
	})
	t.Run("gate denies", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.Billing = billing.GateFunc(func(context.Context, billing.Request) error {
			return &billing.Denial{Status: 402, Message: "Balance exhausted"}
		})
		c := e.dial()
		c.send(create(``))
		if f := c.recvTurn(); gjson.Get(last(f), "status").Int() != 402 {
			t.Fatalf("frames %v", f)
		}
		c.send(create(``)) // the connection stays open for a later turn
		if f := c.recvTurn(); gjson.Get(last(f), "status").Int() != 402 {
			t.Fatalf("second turn %v", f)
		}
	})
	t.Run("pool fails", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.sched.Pool = failingPool{}
		tryAgain(t, e, "No available accounts")
	})
	t.Run("credentials fail everywhere", func(t *testing.T) {
		e := newWSEnv(t, true, "a", "b")
		e.rh.Credentials = credsFunc(func(context.Context, *scheduler.Account) (string, error) { return "", errors.New("vault sealed") })
		c := e.dial()
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "error" || gjson.Get(last(f), "status").Int() != 502 {
			t.Fatalf("frames %v", f)
		}
		if n := len(e.up.Requests()); n != 0 {
			t.Fatalf("%d upstream requests", n)
		}
	})
	t.Run("usage sink hangs", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		ch := stuck(t)
		e.rh.HookTimeout = bound
		var calls atomic.Int64
		e.rh.Usage = billing.SinkFunc(func(context.Context, billing.Usage) error { calls.Add(1); <-ch; return nil })
		c := e.dial()
		for i := 0; i < 2; i++ {
			c.send(create(``))
			if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
				t.Fatalf("turn %d: %v", i, f)
			}
		}
		waitUntil(t, "both records offered", func() bool { return calls.Load() == 2 })
		if !strings.Contains(e.logs.String(), "usage sink did not return in time") {
			t.Fatalf("not logged")
		}
	})
	t.Run("on account event hangs", func(t *testing.T) {
		e := newWSEnv(t, true, "a", "b")
		ch := stuck(t)
		e.sched.EventTimeout = bound
		e.sched.OnAccountEvent = func(context.Context, scheduler.AccountEvent) { <-ch }
		e.up.Script("a", relaytest.Step{Upgrade: true, Status: 401})
		c := e.dial()
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("frames %v", f)
		}
	})
	t.Run("authenticate hangs", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		ch := stuck(t)
		e.rh.HookTimeout = bound
		e.rh.Authenticate = func(*http.Request) (*relay.Subject, error) { <-ch; return nil, nil }
		c, resp := e.dialStatus(http.Header{"Authorization": {"Bearer rk-client"}})
		if c != nil || resp == nil || resp.StatusCode != 503 {
			t.Fatalf("handshake %v", resp)
		}
	})
	t.Run("authenticate answers", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.Authenticate = func(*http.Request) (*relay.Subject, error) {
			return nil, fmt.Errorf("lookup: %w", &relay.APIError{Status: 403, Type: "permission_error", Message: "This key was revoked"})
		}
		c, resp := e.dialStatus(http.Header{"Authorization": {"Bearer rk-client"}})
		if c != nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("handshake %v", resp)
		}
	})
	t.Run("authenticate panics", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.Authenticate = func(*http.Request) (*relay.Subject, error) { panic("auth bug") }
		c, resp := e.dialStatus(http.Header{"Authorization": {"Bearer rk-client"}})
		if c != nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("handshake %v", resp)
		}
	})
}

// TestFaultWSHookHangClientGone: a client that closes while a hook hangs
// ends its connection at once, with no slot held.
func TestFaultWSHookHangClientGone(t *testing.T) {
	e := newWSEnv(t, true, "a")
	ch := stuck(t)
	var calls atomic.Int64
	e.rh.Billing = billing.GateFunc(func(context.Context, billing.Request) error { calls.Add(1); <-ch; return nil })
	c := e.dial()
	c.send(create(``))
	waitUntil(t, "the gate call", func() bool { return calls.Load() == 1 })
	c.ws.CloseNow()
	waitUntil(t, "the connection to end", func() bool { return relay.WebSocketConns(e.rh) == 0 && e.rh.Active() == 0 })
	if n := e.lim.InFlight("user:" + "u1"); n != 0 {
		t.Fatalf("user slots %d", n)
	}
}

// TestFaultWSClientGoneEarly: a client that closes while its turn waits for
// a user slot leaves nothing behind; one that closes while the upstream
// holds the turn before its first event gets the turn drained and
// recorded once the upstream answers.
func TestFaultWSClientGoneEarly(t *testing.T) {
	t.Run("waiting for a user slot", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.subj.Concurrency = 1
		hold := make(chan struct{})
		e.up.Script("a", relaytest.Step{Hold: hold})
		busy := e.dial()
		busy.send(create(``))
		e.WaitInFlight("a", 1)
		c := e.dial()
		c.send(create(``))
		waitUntil(t, "a waiter", func() bool { return e.lim.Waiting("user:"+"u1") == 1 })
		c.ws.CloseNow()
		waitUntil(t, "the waiter to leave", func() bool { return e.lim.Waiting("user:"+"u1") == 0 && relay.WebSocketConns(e.rh) == 1 })
		close(hold)
		if f := busy.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("held turn %v", f)
		}
		if err := e.sink.WaitLen(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if n := len(e.up.Requests()); n != 2 { // the upgrade and one message
			t.Fatalf("%d upstream requests", n)
		}
	})
	t.Run("before the first event", func(t *testing.T) {
		for _, ws := range []bool{true, false} {
			e := newWSEnv(t, ws, "a")
			hold := make(chan struct{})
			e.up.Script("a", relaytest.Step{Hold: hold})
			c := e.dial()
			c.send(create(``))
			e.WaitInFlight("a", 1)
			if err := c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			close(hold)
			if err := e.sink.WaitLen(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			if r := e.sink.Records()[0]; r.Status != billing.StatusClientGone || r.OutputTokens == 0 {
				t.Fatalf("ws=%v: record %+v", ws, r)
			}
		}
	})
}
