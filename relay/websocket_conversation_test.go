package relay_test

import (
	"context"
	"github.com/relaykit/responsesrelay/relay"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// wsChain sends a store=false turn continuing prev ("" starts) and returns
// the response id.
func (c *client) storeFalseTurn(prev, input string) string {
	c.t.Helper()
	msg := `{"type":"response.create","model":"gpt-test","store":false,"input":"` + input + `"`
	if prev != "" {
		msg += `,"previous_response_id":"` + prev + `"`
	}
	c.send(msg + `}`)
	f := c.recvTurn()
	if typeOf(last(f)) != "response.completed" || !strings.Contains(last(f), "Echo: "+input) {
		c.t.Fatalf("turn %q: %v", input, f)
	}
	return gjson.Get(last(f), "response.id").Str
}

// lastMessage is the last turn message an account received.
func lastMessage(t *testing.T, up *relaytest.Server, account string) []byte {
	t.Helper()
	reqs := up.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Account == account && reqs[i].Method != http.MethodGet {
			return reqs[i].Body
		}
	}
	t.Fatalf("no turn reached %s", account)
	return nil
}

// TestWSLocalStateSurvivesRedial: store=false turns chain on a pinned
// upstream socket; when the relay has closed that socket as idle, the new
// socket does not know the previous response and says so: the relay sends
// the chain whole from the connection's own state, on the same account.
func TestWSLocalStateSurvivesRedial(t *testing.T) {
	e := newWSEnv(t, true, "a")
	e.ws.UpstreamIdleTimeout = time.Millisecond
	c := e.dial()
	prev := c.storeFalseTurn("", "one")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.up.Wait(ctx, func() bool { return e.up.WSConns("a") == 0 }); err != nil {
		t.Fatalf("the idle socket was not closed: %v", err)
	}
	prev = c.storeFalseTurn(prev, "two")
	sent := lastMessage(t, e.up, "a")
	if gjson.GetBytes(sent, "previous_response_id").Exists() || !strings.Contains(string(sent), "Echo: one") {
		t.Fatalf("the retry on the new socket was not the whole chain: %s", sent)
	}
	if err := waitRecords(e, 2); err != nil {
		t.Fatal(err)
	}
	if r := e.sink.Records()[1]; !r.ContextRebuilt || r.Attempts != 2 || r.AccountID != "a" {
		t.Fatalf("record %+v", r)
	}
	if !coolingUntil(e.sched, "a").IsZero() {
		t.Fatal("the account was cooled down")
	}
}

// TestWSLocalStateMovesAccount: a store=false conversation on a pinned
// socket whose account starts refusing moves to another account with its
// whole context; later turns chain there.
func TestWSLocalStateMovesAccount(t *testing.T) {
	e := newWSEnv(t, true, "a", "b")
	c := e.dial()
	prev := c.storeFalseTurn("", "one")
	prev = c.storeFalseTurn(prev, "two")
	e.up.Script("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"60"}}})
	prev = c.storeFalseTurn(prev, "three")
	sent := lastMessage(t, e.up, "b")
	for _, want := range []string{`"one"`, "Echo: one", `"two"`, "Echo: two", `"three"`} {
		if !strings.Contains(gjson.GetBytes(sent, "input").Raw, want) {
			t.Fatalf("b's first turn lacks %s: %s", want, sent)
		}
	}
	c.storeFalseTurn(prev, "four")
	sent = lastMessage(t, e.up, "b")
	if gjson.GetBytes(sent, "previous_response_id").Str != prev {
		t.Fatalf("turn four did not chain natively on b's socket: %s", sent)
	}
}

// TestWSLocalStateBounded: what connections hold as their last response's
// context is bounded across the Handler: past the bound a connection keeps
// none (its next turn reads the Store), and the bytes held never exceed it.
func TestWSLocalStateBounded(t *testing.T) {
	e := newWSEnv(t, true, "a")
	const limit = 4 << 10
	relay.SetLocalLimit(e.rh, limit)
	big := strings.Repeat("x", 1500)
	c1, c2 := e.dial(), e.dial()
	p1 := c1.storeFalseTurn("", big)
	// The connection keeps its state once the turn returns, just after the
	// client read the terminal frame.
	waitUntil(t, "the first turn's state", func() bool { return relay.LocalBytes(e.rh) > 0 })
	if n := relay.LocalBytes(e.rh); n > limit {
		t.Fatalf("held %d bytes after one turn", n)
	}
	p2 := c2.storeFalseTurn("", big)
	if n := relay.LocalBytes(e.rh); n > limit {
		t.Fatalf("held %d bytes, bound %d", n, limit)
	}
	// c1's chain grows past what is left: not kept; the chain still
	// continues natively on its socket, and from the Store if it moves.
	p1 = c1.storeFalseTurn(p1, big)
	c2.storeFalseTurn(p2, "small")
	if n := relay.LocalBytes(e.rh); n > limit {
		t.Fatalf("held %d bytes, bound %d", n, limit)
	}
	c1.storeFalseTurn(p1, "more")
}

// TestWSCompactionTrigger: compaction v2 (a compaction_trigger as the last
// input item of a normal turn) passes through untouched, and exactly one
// compaction item reaches the client, over WebSocket as over SSE.
func TestWSCompactionTrigger(t *testing.T) {
	e := newWSEnv(t, true, "a")
	c := e.dial()
	c.send(`{"type":"response.create","model":"gpt-test","input":[{"type":"message","role":"user","content":"long"},{"type":"compaction_trigger"}]}`)
	f := c.recvTurn()
	n := 0
	for _, fr := range f {
		if typeOf(fr) == "response.output_item.done" && gjson.Get(fr, "item.type").Str == "compaction" {
			n++
		}
	}
	if typeOf(last(f)) != "response.completed" || n != 1 {
		t.Fatalf("%d compaction items in %v", n, f)
	}
	sent := lastMessage(t, e.up, "a")
	if gjson.GetBytes(sent, "input.1.type").Str != "compaction_trigger" {
		t.Fatalf("the trigger did not reach the upstream as sent: %s", sent)
	}
}
