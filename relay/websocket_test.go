package relay_test

import (
	"context"
	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/relay"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// TestChainedTurnsPinnedSocket: two store=false turns chained through one
// pinned upstream socket; one usage record per turn.
func TestChainedTurnsPinnedSocket(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	c := e.dial()
	c.send(create(`,"store":false`))
	first := c.recvTurn()
	if typeOf(last(first)) != "response.completed" || typeOf(first[0]) != "response.created" {
		t.Fatalf("first turn: %v", first)
	}
	prev := gjson.Get(last(first), "response.id").String()
	c.send(create(`,"store":false,"previous_response_id":"` + prev + `"`))
	second := c.recvTurn()
	if typeOf(last(second)) != "response.completed" {
		t.Fatalf("second turn: %v", second)
	}
	if n := e.up.WSConns("a"); n != 1 {
		t.Fatalf("%d upstream sockets on a", n)
	}
	// An idle connection holds no slot.
	waitUntil(t, "slots released while the connection stays open", func() bool {
		return e.lim.InFlight("user:"+"u1") == 0 && schedInFlight(e.sched, "a") == 0
	})
	if relay.WebSocketConns(e.rh) != 1 {
		t.Fatalf("%d open connections", relay.WebSocketConns(e.rh))
	}
	recs := e.sink.Records()
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	served := e.up.Served()
	var wsServed []relaytest.Served
	for _, s := range served {
		if s.ResponseID != "" {
			wsServed = append(wsServed, s)
		}
	}
	for i, r := range recs {
		if r.Transport != "ws" || r.Turn != i+1 || r.AccountID != "a" || r.Status != billing.StatusCompleted || !r.Stream {
			t.Fatalf("record %d: %+v", i, r)
		}
		u := wsServed[i].Usage
		if r.InputTokens != u.Input || r.OutputTokens != u.Output || r.CachedInputTokens != u.Cached || r.TotalTokens != (u.Input+u.Output) {
			t.Fatalf("record %d usage %+v, upstream %+v", i, r, u)
		}
	}
	if recs[1].CachedInputTokens == 0 {
		t.Fatalf("chained turn has no cached tokens")
	}
}

// TestChainedTurnsBridge: accounts without upstream WebSocket get each turn
// as a streaming POST; chaining works with store=true.
func TestChainedTurnsBridge(t *testing.T) {
	e := newWSEnv(t, false, "a")
	c := e.dial()
	prev := c.completedTurn(``)
	c.send(create(`,"previous_response_id":"` + prev + `"`))
	if second := c.recvTurn(); typeOf(last(second)) != "response.completed" {
		t.Fatalf("second: %v", second)
	}
	if n := e.up.WSConns("a"); n != 0 {
		t.Fatalf("bridge opened %d upstream sockets", n)
	}
	reqs := e.up.Requests()
	for _, q := range reqs {
		if q.Method != http.MethodPost || gjson.GetBytes(q.Body, "type").Exists() || !gjson.GetBytes(q.Body, "stream").Bool() {
			t.Fatalf("bridged request %s %s", q.Method, q.Body)
		}
	}
	waitUntil(t, "two records", func() bool { return len(e.sink.Records()) == 2 })
	if recs := e.sink.Records(); recs[1].Turn != 2 || recs[1].Transport != "ws" {
		t.Fatalf("records %+v", recs)
	}
}

func TestPlainGetAndAuth(t *testing.T) {
	e := newWSEnv(t, true, "a")
	resp, err := http.Get(e.srv.URL + "/v1/responses")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 426 {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses"
	_, resp, err = websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer wrong"}}})
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("bad key: %v %v", resp, err)
	}
}

func TestValidationFrameKeepsConnection(t *testing.T) {
	e := newWSEnv(t, true, "a")
	c := e.dial()
	c.send(`{"type":"response.create","input":"no model"}`)
	f := c.recvTurn()
	if len(f) != 1 || typeOf(f[0]) != "error" || gjson.Get(f[0], "status").Int() != 400 ||
		gjson.Get(f[0], "error.message").String() != "model is required" || gjson.Get(f[0], "error.param").String() != "model" {
		t.Fatalf("frames %v", f)
	}
	c.send(create(``))
	if got := c.recvTurn(); typeOf(last(got)) != "response.completed" {
		t.Fatalf("next turn %v", got)
	}
}

func TestPolicyCloses(t *testing.T) {
	t.Run("first message timeout", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.ws.FirstMessageTimeout = 30 * time.Millisecond
		if code := e.dial().closeStatus(); code != websocket.StatusPolicyViolation {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("binary frame", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		c := e.dial()
		c.ws.Write(context.Background(), websocket.MessageBinary, []byte(create(``)))
		if code := c.closeStatus(); code != websocket.StatusPolicyViolation {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("other type", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		c := e.dial()
		c.send(`{"type":"response.append","input":"x"}`)
		if code := c.closeStatus(); code != websocket.StatusPolicyViolation {
			t.Fatalf("close %d", code)
		}
	})
	t.Run("too big", func(t *testing.T) {
		e := newWSEnv(t, true, "a")
		e.rh.MaxBodyBytes = 1024
		c := e.dial()
		c.ws.Write(context.Background(), websocket.MessageText, []byte(create(`,"instructions":"`+strings.Repeat("x", 4096)+`"`)))
		if code := c.closeStatus(); code != websocket.StatusMessageTooBig {
			t.Fatalf("close %d", code)
		}
		if n := len(e.up.Requests()); n != 0 {
			t.Fatalf("upstream contacted %d times", n)
		}
	})
}

// TestClientGoneMidTurn: the client disconnects while the upstream thinks;
// the turn is drained and recorded, and every slot comes back.
func TestClientGoneMidTurn(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.up.Script("a", relaytest.Step{FirstTokenDelay: 100 * time.Millisecond})
	c := e.dial()
	c.send(create(``))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.WaitInFlight("a", 1)
	c.ws.CloseNow()
	if err := e.sink.WaitLen(ctx, 1); err != nil {
		t.Fatal(err)
	}
	rec := e.sink.Records()[0]
	if rec.Status != billing.StatusClientGone || rec.OutputTokens == 0 {
		t.Fatalf("record %+v", rec)
	}
}

// TestUpstreamResetMidTurn: the upstream socket dies after output; the turn
// ends with one response.failed, and the connection serves the next turn on
// a new upstream socket.
func TestUpstreamResetMidTurn(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.up.Script("a", relaytest.Step{After: 5, Cut: true})
	c := e.dial()
	c.send(create(``))
	f := c.recvTurn()
	n := 0
	for _, x := range f {
		if typeOf(x) == "response.failed" || typeOf(x) == "response.completed" {
			n++
		}
	}
	if typeOf(last(f)) != "response.failed" || n != 1 || gjson.Get(last(f), "response.error.code").String() != "upstream_error" {
		t.Fatalf("frames %v", f)
	}
	c.send(create(``))
	if g := c.recvTurn(); typeOf(last(g)) != "response.completed" {
		t.Fatalf("next turn %v", g)
	}
}

// TestUpgradeFailover: an account whose upstream handshake answers 429 is
// failed over before any event; the turn is served by the next account.
func TestUpgradeFailover(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	e.up.Script("a", relaytest.Step{Upgrade: true, Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	c := e.dial()
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("frames %v", f)
	}
	waitUntil(t, "the record", func() bool { return len(e.sink.Records()) == 1 })
	recs := e.sink.Records()
	if recs[0].AccountID != "b" || recs[0].Attempts != 2 {
		t.Fatalf("records %+v", recs)
	}
	if coolingUntil(e.sched, "a").IsZero() {
		t.Fatal("the 429 did not bench the account")
	}
}

// TestNoFailoverForLocalState: a store=false continuation the relay holds
// no record of (made on another connection, conversations off) cannot
// move to another account; its error reaches the client as a frame.
func TestNoFailoverForLocalState(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	e.rh.Conversations = &conversation.Memory{MaxBytes: -1}
	maker := e.dial()
	maker.send(create(`,"store":false`))
	prev := gjson.Get(last(maker.recvTurn()), "response.id").String()
	c := e.dial()
	e.up.Script("a", relaytest.Step{Status: 500})
	c.send(create(`,"store":false,"previous_response_id":"` + prev + `"`))
	f := c.recvTurn()
	if typeOf(last(f)) != "error" {
		t.Fatalf("frames %v", f)
	}
	for _, q := range e.up.Requests() {
		if q.Account == "b" {
			t.Fatalf("a connection-local continuation moved to b")
		}
	}
}

func TestConnectionCap(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.ws.MaxConnsPerKey = 1
	e.dial()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses"
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer rk-client"}}})
	if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second connection: %v %v", resp, err)
	}
}

// TestUpstreamMaxAge: an upstream socket older than UpstreamMaxAge is
// replaced at the next turn boundary.
func TestUpstreamMaxAge(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.ws.UpstreamMaxAge = time.Nanosecond
	c := e.dial()
	for i := 0; i < 3; i++ {
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("turn %d: %v", i, f)
		}
	}
	upgrades := 0
	for _, q := range e.up.Requests() {
		if q.Method == http.MethodGet {
			upgrades++
		}
	}
	if upgrades != 3 {
		t.Fatalf("%d upstream dials for 3 turns", upgrades)
	}
}

// TestShutdown: an idle connection is closed with 1001, new upgrades are
// refused, and Shutdown returns once the connections are gone.
func TestShutdown(t *testing.T) {
	e := newWSEnv(t, true, "a")
	c := e.dial()
	c.send(create(``))
	c.recvTurn()
	code := make(chan websocket.StatusCode, 1)
	go func() { code <- c.closeStatus() }() // a client reads all the time
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.rh.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-code; got != websocket.StatusGoingAway {
		t.Fatalf("close %d", got)
	}
	if relay.WebSocketConns(e.rh) != 0 {
		t.Fatalf("%d connections left", relay.WebSocketConns(e.rh))
	}
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/responses"
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer rk-client"}}})
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("upgrade after shutdown: %v %v", resp, err)
	}
}

// TestErrorFrameRefusalFailsOver: an upstream error frame with a status in
// place of the first event (429 with reset headers) fails over and benches
// the account for the time its headers say.
func TestErrorFrameRefusalFailsOver(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"42"}}})
	c := e.dial()
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("frames %v", f)
	}
	waitUntil(t, "the record", func() bool { return len(e.sink.Records()) == 1 })
	if r := e.sink.Records()[0]; r.AccountID != "b" || r.Attempts != 2 {
		t.Fatalf("record %+v", r)
	}
	if d := time.Until(coolingUntil(e.sched, "a")); d < 40*time.Second || d > 42*time.Second {
		t.Fatalf("cooldown %v, want about 42s", d)
	}
}

// TestPingTimeoutCutsDeadClient: a client that never answers pings (it
// never reads, so its pongs are never sent) is cut after PingTimeout.
func TestPingTimeoutCutsDeadClient(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.ws.PingInterval = 10 * time.Millisecond
	e.ws.PingTimeout = 20 * time.Millisecond
	e.dial() // never reads
	waitUntil(t, "the relay to drop the silent connection", func() bool { return relay.WebSocketConns(e.rh) == 0 })
}

// TestWSBoundWhileStreaming: over a WebSocket too, with a shared Store a
// turn's binding is written from its first output, before its terminal
// event reaches the client, and the next turn continues on its account.
// A client that leaves mid-turn leaves no binding goroutine behind (the
// leak check at cleanup).
func TestWSBoundWhileStreaming(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	st := &gateStore{mapStore: mapStore{m: map[string]string{}}, set: make(chan string, 8)}
	e.sched.Store = st
	c := e.dial()
	prev := c.completedTurn(``)
	if v, ok, _ := st.Get(context.Background(), "resp:"+prev); !ok || !strings.Contains(v, "a") {
		t.Fatalf("binding of %s: %q", prev, v)
	}
	c.completedTurn(`,"previous_response_id":"` + prev + `"`)

	for len(st.set) > 0 { // the first two turns' writes
		<-st.set
	}
	hold := make(chan struct{})
	e.up.Script("a", relaytest.Step{After: 4, Hold: hold})
	c.send(create(``))
	select {
	case <-st.set: // the third turn's binding, while its upstream is paused
	case <-time.After(10 * time.Second):
		close(hold)
		t.Fatal("nothing was bound while the turn was paused after its output began")
	}
	c.ws.CloseNow()
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sink.WaitLen(ctx, 3); err != nil {
		t.Fatal(err)
	}
}
