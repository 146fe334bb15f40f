package relay_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

// deep is prefix followed by an array nested n deep, closed with suffix
// when closed is set.
func deep(prefix string, n int, closed bool, suffix string) string {
	s := prefix + strings.Repeat("[", n)
	if closed {
		s += strings.Repeat("]", n) + suffix
	}
	return s
}

// wantErrorFrame checks that frames ended with one error frame of status
// and a message containing msg; it returns the error object.
func wantErrorFrame(t *testing.T, frames []string, status int64, msg string) gjson.Result {
	t.Helper()
	f := last(frames)
	if typeOf(f) != "error" || gjson.Get(f, "status").Int() != status || !strings.Contains(gjson.Get(f, "error.message").String(), msg) {
		t.Fatalf("want an error frame %d %q, got %.300s", status, msg, f)
	}
	return gjson.Get(f, "error")
}

// turnsAt lists the accounts of the turns the upstream got: socket
// messages and bridge POSTs, not upgrades.
func turnsAt(e *wsEnv) []string {
	var out []string
	for _, r := range e.up.Requests() {
		if r.Method != http.MethodGet {
			out = append(out, r.Account)
		}
	}
	return out
}

// TestWSDeepMessage: a response.create nested a million deep is answered
// with a 400 error frame before any recursive parser or the upstream sees
// it, and the connection serves the next turn.
func TestWSDeepMessage(t *testing.T) {
	e := newWSEnv(t, true, "a")
	c := e.dial()
	for _, closed := range []bool{true, false} {
		c.send(deep(`{"type":"response.create","model":"gpt-test","input":`, million, closed, `}`))
		e := wantErrorFrame(t, c.recvTurn(), 400, "JSON nested deeper than 512 levels")
		if e.Get("type").String() != "invalid_request_error" {
			t.Fatalf("error %s", e.Raw)
		}
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("the turn after a deep message: %v", f)
		}
	}
	if n := len(turnsAt(e)); n != 2 {
		t.Fatalf("%d upstream turns, want the 2 valid ones", n)
	}
}

// TestWSDuplicateKeys: a response.create repeating a key the relay reads
// or rewrites (type included) is a 400 error frame naming it, and the
// connection serves the next turn.
func TestWSDuplicateKeys(t *testing.T) {
	e := newWSEnv(t, true, "a")
	c := e.dial()
	dups := map[string]string{
		"type":                 `"type":"response.create"`,
		"model":                `"model":"gpt-other"`,
		"input":                `"input":"bye"`,
		"stream":               `"stream":true,"stream":false`,
		"store":                `"store":true,"store":false`,
		"previous_response_id": `"previous_response_id":null,"previous_response_id":"resp_x"`,
		"background":           `"background":false,"background":true`,
		"conversation":         `"conversation":null,"conversation":"conv_1"`,
		"prompt_cache_key":     `"prompt_cache_key":"a","prompt_cache_key":"b"`,
	}
	for key, extra := range dups {
		c.send(create(`,` + extra))
		errObj := wantErrorFrame(t, c.recvTurn(), 400, `duplicate key "`+key+`"`)
		if errObj.Get("param").String() != key {
			t.Fatalf("%s: param %s", key, errObj.Get("param").Raw)
		}
	}
	if n := len(turnsAt(e)); n != 0 {
		t.Fatalf("duplicate keys reached the upstream %d times", n)
	}
	c.send(create(``))
	if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
		t.Fatalf("the turn after duplicates: %v", f)
	}
}

// deepFrame is an upstream answer whose first output event nests a
// million deep: one message on an upstream socket, an SSE stream on the
// HTTP bridge.
func deepFrame(ws bool) relaytest.Step {
	ev := deep(`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","delta":`, million, true, `}`)
	if ws {
		return relaytest.Step{Status: 200, Body: ev}
	}
	return relaytest.Step{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: `data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_deep"}}` + "\n\n" +
			"data: " + ev + "\n\n" +
			`data: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_deep","status":"completed"}}` + "\n\n"}
}

// TestWSDeepUpstreamFrame: an upstream event nested a million deep, on an
// upstream socket or the HTTP bridge, is a broken attempt: the turn fails
// over to the next account, or with none left ends in a 502 error frame;
// the deep event never reaches the client and the connection goes on.
func TestWSDeepUpstreamFrame(t *testing.T) {
	for _, ws := range []bool{true, false} {
		e := newWSEnv(t, ws, "bad", "good")
		// Only matters if the deep frame were let through: the fake sends
		// nothing after it.
		e.rh.StreamIdleTimeout = 5 * time.Second
		e.rh.MaxEventBytes = 4 << 20
		e.up.Script("bad", deepFrame(ws))
		c := e.dial()
		c.send(create(``))
		f := c.recvTurn()
		if typeOf(last(f)) != "response.completed" || strings.Contains(strings.Join(f, ""), "[[[[") {
			t.Fatalf("ws=%v: frames %.300v", ws, f)
		}
		if got := turnsAt(e); len(got) != 2 || got[0] != "bad" || got[1] != "good" {
			t.Fatalf("ws=%v: attempts on %v", ws, got)
		}

		one := newWSEnv(t, ws, "a")
		one.rh.StreamIdleTimeout = 5 * time.Second
		one.rh.MaxEventBytes = 4 << 20
		one.up.Script("a", deepFrame(ws))
		c = one.dial()
		c.send(create(``))
		f = c.recvTurn()
		if strings.Contains(strings.Join(f, ""), "[[[[") {
			t.Fatalf("ws=%v: the deep frame reached the client", ws)
		}
		wantErrorFrame(t, f, 502, "")
		c.send(create(``))
		if f := c.recvTurn(); typeOf(last(f)) != "response.completed" {
			t.Fatalf("ws=%v: the turn after a deep frame: %v", ws, f)
		}
	}
}
