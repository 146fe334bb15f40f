package relaytest_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/relaykit/responsesrelay/relay/relaytest"
	"github.com/tidwall/gjson"
)

func TestWSFaultsInBand(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	s.Script("a",
		relaytest.Step{End: "refused server_is_overloaded"},
		relaytest.Step{End: "error rate_limit_exceeded"},
		relaytest.Step{End: "failed server_error"},
		relaytest.Step{End: "incomplete max_output_tokens", Deltas: 2},
		relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"2"}, "x-codex-primary-used-percent": {"100"}}},
		relaytest.Step{Status: 503},
		relaytest.Step{Status: 400, Body: `{"type":"error","status":400,"error":{"code":"context_length_exceeded"}}`},
		relaytest.Step{FirstTokenDelay: time.Millisecond, Usage: &relaytest.Usage{Input: 7, Output: 3}},
	)
	const create = `{"type":"response.create","model":"m","input":"x"}`

	ms := wsTurn(t, c, create)
	if !equal(msgTypes(ms), []string{"response.created", "response.in_progress", "response.failed"}) ||
		ms[2].Get("response.error.code").String() != "server_is_overloaded" || ms[2].Get("response.usage").Type != gjson.Null {
		t.Errorf("in-band failed: %v %s", msgTypes(ms), ms[len(ms)-1].Raw)
	}
	checkSeq(t, ms)

	ms = wsTurn(t, c, create)
	if !equal(msgTypes(ms), []string{"response.created", "response.in_progress", "error"}) ||
		ms[2].Get("error.code").String() != "rate_limit_exceeded" || ms[2].Get("sequence_number").Int() != 2 {
		t.Errorf("error event: %v %s", msgTypes(ms), ms[len(ms)-1].Raw)
	}

	ms = wsTurn(t, c, create)
	if !equal(msgTypes(ms), textTurn(5, "response.failed")) || ms[len(ms)-1].Get("response.usage.output_tokens").Int() != 5 {
		t.Errorf("fail after output: %v", msgTypes(ms))
	}

	ms = wsTurn(t, c, create)
	if !equal(msgTypes(ms), textTurn(2, "response.incomplete")) ||
		ms[len(ms)-1].Get("response.incomplete_details.reason").String() != "max_output_tokens" {
		t.Errorf("incomplete: %v", msgTypes(ms))
	}

	ms = wsTurn(t, c, create)
	checkError(t, ms[0], 429, "rate_limit_error", "rate_limit_exceeded", "")
	if h := ms[0].Get("headers"); h.Get("retry-after").String() != "2" || h.Get("x-codex-primary-used-percent").String() != "100" {
		t.Errorf("headers %s", h.Raw)
	}
	ms = wsTurn(t, c, create)
	checkError(t, ms[0], 503, "server_error", "server_is_overloaded", "")
	if ms[0].Get("headers").Exists() {
		t.Errorf("headers without Step.Header: %s", ms[0].Raw)
	}
	if ms = wsTurn(t, c, create); ms[0].Raw != `{"type":"error","status":400,"error":{"code":"context_length_exceeded"}}` {
		t.Errorf("body: %s", ms[0].Raw)
	}
	ms = wsTurn(t, c, create)
	if completedID(t, ms); ms[len(ms)-1].Get("response.usage.total_tokens").Int() != 10 {
		t.Errorf("usage %s", ms[len(ms)-1].Get("response.usage").Raw)
	}

	var got []string
	for _, sv := range s.Served()[1:] {
		got = append(got, sv.Status+"/"+sv.Code)
	}
	want := []string{"failed/server_is_overloaded", "error/rate_limit_exceeded", "failed/server_error", "incomplete/",
		"error/rate_limit_exceeded", "error/server_is_overloaded", "error/", "completed/"}
	if !equal(got, want) {
		t.Errorf("served %v\nwant %v", got, want)
	}
	if sv := s.Served()[5]; sv.HTTPStatus != 429 || sv.Events != 0 || sv.ResponseID != "" {
		t.Errorf("429 served %+v", sv)
	}
}

// wsReadUntilError reads messages until the connection ends and returns
// their count and the read error.
func wsReadUntilError(c *websocket.Conn) (int, error) {
	for n := 0; ; n++ {
		if _, err := wsRecv(c); err != nil {
			return n, err
		}
	}
}

func TestWSResets(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 4, Cut: true}, relaytest.Step{Cut: true}, relaytest.Step{After: 100, Cut: true})
	for _, want := range []int{4, 0, 13} {
		c := openWS(t, s, "a")
		wsSend(t, c, `{"type":"response.create","model":"m","input":"x"}`)
		n, err := wsReadUntilError(c)
		// No close message: the connection was cut.
		if n != want || websocket.CloseStatus(err) != -1 {
			t.Errorf("got %d messages and %v; want %d and a cut", n, err, want)
		}
		waitWSConns(t, s, "a", 0)
	}
	var got []string
	for _, sv := range s.Served() {
		if sv.Status != "upgraded" {
			got = append(got, sv.Status)
			if sv.Usage != (relaytest.Usage{}) && sv.Status != "completed" {
				t.Errorf("usage on a cut turn: %+v", sv)
			}
		}
	}
	if !equal(got, []string{"aborted", "aborted", "completed"}) || s.InFlight("a") != 0 {
		t.Errorf("served %v, in flight %d", got, s.InFlight("a"))
	}
}

func TestWSIdleAndSecondCreate(t *testing.T) {
	s := newServer(t)
	s.Script("a", relaytest.Step{After: 3, Hold: make(chan struct{})}, relaytest.Step{Status: 500})
	c := openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"m","input":"x"}`)
	for i := range 3 {
		wsRead(t, c)
		_ = i
	}
	if s.InFlight("a") != 1 {
		t.Errorf("in flight while idle: %d", s.InFlight("a"))
	}
	// One response at a time: the second create is refused and takes no step.
	wsSend(t, c, `{"type":"response.create","model":"m","input":"y"}`)
	checkError(t, wsRead(t, c), 400, "invalid_request_error", "response_in_progress", "")
	c.CloseNow()
	waitWSConns(t, s, "a", 0)
	served := s.Served()
	if len(served) != 3 || served[1].Status != "error" || served[2].Status != "aborted" || served[2].Events != 3 || s.InFlight("a") != 0 {
		t.Errorf("served %+v", served)
	}
	c = openWS(t, s, "a")
	checkError(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0], 500, "server_error", "", "")
}

func TestWSHoldHangAndNoTerminal(t *testing.T) {
	s := newServer(t)
	release := make(chan struct{})
	s.Script("a", relaytest.Step{Hold: release}, relaytest.Step{Hold: make(chan struct{})}, relaytest.Step{End: "none"})
	c := openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"m","input":"held"}`)
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := s.Wait(ctx, func() bool { return s.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}
	wsSend(t, c, `{"type":"response.create","model":"m","input":"too soon"}`)
	// The refusal comes first: the turn is still held.
	checkError(t, wsRead(t, c), 400, "invalid_request_error", "response_in_progress", "")
	close(release)
	var ms []gjson.Result
	for len(ms) == 0 || !isEnd(ms[len(ms)-1]) {
		ms = append(ms, wsRead(t, c))
	}
	completedID(t, ms)

	wsSend(t, c, `{"type":"response.create","model":"m","input":"hang"}`)
	if err := s.Wait(ctx, func() bool { return s.InFlight("a") == 1 }); err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
	waitWSConns(t, s, "a", 0)
	if sv := s.Served(); sv[len(sv)-1].Status != "aborted" || sv[len(sv)-1].Events != 0 || s.InFlight("a") != 0 {
		t.Errorf("hung turn %+v", sv[len(sv)-1])
	}

	// End "none": the output, then a normal close before any terminal event.
	c = openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"m","input":"x"}`)
	n, err := wsReadUntilError(c)
	if n != len(textTurn(5, "")) || websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("no terminal: %d messages, %v", n, err)
	}
	waitWSConns(t, s, "a", 0)
	if sv := s.Served(); sv[len(sv)-1].Status != "aborted" {
		t.Errorf("no terminal %+v", sv[len(sv)-1])
	}
}

func TestWSBinaryMessage(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	wsSendType(t, c, websocket.MessageBinary, `{"type":"response.create","model":"m"}`)
	if _, err := wsReadUntilError(c); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("read error %v, want close 1008", err)
	}
	waitWSConns(t, s, "a", 0)
	if sv := s.Served(); len(sv) != 2 || sv[1].Status != "error" || !sv[1].WebSocket || s.InFlight("a") != 0 {
		t.Errorf("served %+v", sv)
	}
	if r := s.Requests(); len(r) != 2 || r[1].Method != "WS" || string(r[1].Body) != `{"type":"response.create","model":"m"}` {
		t.Errorf("requests %+v", r)
	}
}
