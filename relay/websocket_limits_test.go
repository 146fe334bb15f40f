package relay_test

import (
	"context"
	"github.com/relaykit/responsesrelay/relay"
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/concurrency"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

var clientHeader = http.Header{"Authorization": {"Bearer rk-client"}}

// TestLimitWSConnCap: one connection over MaxConnsPerKey is refused with
// 429 before the upgrade and holds nothing; closing a connection frees its
// place.
func TestLimitWSConnCap(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.ws.MaxConnsPerKey = 2
	first := e.dial()
	e.dial()
	c, resp := e.dialStatus(clientHeader)
	if c != nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: %v", resp)
	}
	if relay.WebSocketConns(e.rh) != 2 || e.lim.InFlight("user:"+"u1") != 0 || len(e.up.Requests()) != 0 {
		t.Fatalf("open %d, user slots %d, upstream %d", relay.WebSocketConns(e.rh), e.lim.InFlight("user:"+"u1"), len(e.up.Requests()))
	}
	first.ws.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, "the closed connection to leave", func() bool { return relay.WebSocketConns(e.rh) == 1 })
	if c, resp := e.dialStatus(clientHeader); c == nil {
		t.Fatalf("a freed place was not given out: %v", resp)
	}
}

// TestLimitWSUserSlotBusy: a turn that finds the user's slots busy is
// refused with a 429 error frame and close 1013, and takes no slot.
func TestLimitWSUserSlotBusy(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.subj.Concurrency = 1
	e.rh.UserWait = concurrency.WaitOptions{MaxWaiters: -1}
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: hold})
	busy := e.dial()
	busy.send(create(``))
	e.WaitInFlight("a", 1)
	c := e.dial()
	c.send(create(``))
	f := c.recvTurn()
	if typeOf(last(f)) != "error" || gjson.Get(last(f), "status").Int() != 429 {
		t.Fatalf("frames %v", f)
	}
	if code := c.closeStatus(); code != websocket.StatusTryAgainLater {
		t.Fatalf("close %d", code)
	}
	if n := e.lim.InFlight("user:" + "u1"); n != 1 {
		t.Fatalf("user slots %d", n)
	}
	close(hold)
	if g := busy.recvTurn(); typeOf(last(g)) != "response.completed" {
		t.Fatalf("held turn %v", g)
	}
}

// TestLimitWSOneTurnAtATime: while a turn runs, one more response.create
// waits; a third is refused with response_in_progress and the connection
// stays open.
func TestLimitWSOneTurnAtATime(t *testing.T) {
	e := newWSEnv(t, true, "a")
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{Hold: hold})
	c := e.dial()
	c.send(create(``))
	e.WaitInFlight("a", 1)
	c.send(create(``))
	c.send(create(``))
	f := c.recvTurn()
	if len(f) != 1 || gjson.Get(f[0], "error.code").String() != "response_in_progress" {
		t.Fatalf("frames %v", f)
	}
	close(hold)
	for i := 0; i < 2; i++ {
		if g := c.recvTurn(); typeOf(last(g)) != "response.completed" {
			t.Fatalf("turn %d: %v", i, g)
		}
	}
	if err := e.sink.WaitLen(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
}

// TestWSHandshakeHeaderHygiene: the upstream socket is dialed with the
// account's credentials and the allowlisted client headers only.
func TestWSHandshakeHeaderHygiene(t *testing.T) {
	e := newWSEnv(t, true, "a")
	hdr := http.Header{
		"Authorization":       {"Bearer rk-client"},
		"Cookie":              {"sid=secret"},
		"Api-Key":             {"rk-client-api"},
		"X-Api-Key":           {"rk-client-x"},
		"X-Forwarded-For":     {"10.0.0.1"},
		"Openai-Organization": {"org-client"},
		"Originator":          {"codex_cli_rs"},
		"User-Agent":          {"codex_cli_rs/1.0"},
	}
	hdr["session_id"] = []string{"sess-1"}
	c, resp := e.dialStatus(hdr)
	if c == nil {
		t.Fatalf("dial: %v", resp)
	}
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("frames %v", f)
	}
	var up http.Header
	for _, q := range e.up.Requests() {
		if q.Method == http.MethodGet {
			up = q.Header
		}
	}
	if up == nil {
		t.Fatal("no upstream dial")
	}
	if a := up.Get("Authorization"); a != "Bearer "+e.keys["a"] {
		t.Fatalf("upstream Authorization %q", a)
	}
	for _, k := range []string{"Cookie", "Api-Key", "X-Api-Key", "X-Forwarded-For", "Openai-Organization"} {
		if v := up.Values(k); len(v) > 0 {
			t.Fatalf("%s crossed to the upstream: %q", k, v)
		}
	}
	if up.Get("Originator") != "codex_cli_rs" || up.Get("Openai-Beta") == "" {
		t.Fatalf("allowed headers missing: %v", up)
	}
}
