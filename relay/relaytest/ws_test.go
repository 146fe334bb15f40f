package relaytest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// wsTimeout only bounds a broken test; nothing waits for it to pass.
const wsTimeout = 10 * time.Second

// dialWS opens a WebSocket to the account; hdr pairs override headers, an
// empty value removes one.
func dialWS(t *testing.T, s *relaytest.Server, account string, hdr ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + testKey}}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			h.Del(hdr[i])
		} else {
			h.Set(hdr[i], hdr[i+1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, s.WSURL(account), &websocket.DialOptions{HTTPClient: s.Client(), HTTPHeader: h})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func openWS(t *testing.T, s *relaytest.Server, account string) *websocket.Conn {
	t.Helper()
	c, _, err := dialWS(t, s, account)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wsSend(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	wsSendType(t, c, websocket.MessageText, msg)
}

func wsSendType(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// wsRecv reads one message; the error is the read error, if any.
func wsRecv(c *websocket.Conn) (gjson.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return gjson.Result{}, err
	}
	if typ != websocket.MessageText || !gjson.ValidBytes(b) {
		return gjson.Result{}, errors.New("not a JSON text message: " + string(b))
	}
	return gjson.ParseBytes(b), nil
}

func wsRead(t *testing.T, c *websocket.Conn) gjson.Result {
	t.Helper()
	m, err := wsRecv(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// isEnd reports whether a message ends a turn.
func isEnd(m gjson.Result) bool {
	switch m.Get("type").String() {
	case "response.completed", "response.incomplete", "response.failed", "error":
		return true
	}
	return false
}

// wsTurn sends msg and reads the messages up to the one ending the turn.
func wsTurn(t *testing.T, c *websocket.Conn, msg string) []gjson.Result {
	t.Helper()
	wsSend(t, c, msg)
	var out []gjson.Result
	for {
		m := wsRead(t, c)
		out = append(out, m)
		if isEnd(m) {
			return out
		}
	}
}

func msgTypes(ms []gjson.Result) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Get("type").String()
	}
	return out
}

func checkSeq(t *testing.T, ms []gjson.Result) {
	t.Helper()
	for i, m := range ms {
		if got := m.Get("sequence_number"); got.Type != gjson.Number || got.Int() != int64(i) {
			t.Errorf("message %d (%s): sequence_number %s", i, m.Get("type"), got.Raw)
		}
	}
}

// completedID checks that a turn completed and returns its response id.
func completedID(t *testing.T, ms []gjson.Result) string {
	t.Helper()
	end := ms[len(ms)-1]
	if end.Get("type").String() != "response.completed" {
		t.Fatalf("turn ended with %s", end.Raw)
	}
	return end.Get("response.id").String()
}

// checkError checks an error message of the WebSocket mode.
func checkError(t *testing.T, m gjson.Result, status int, typ, code, param string) {
	t.Helper()
	e := m.Get("error")
	for _, k := range []string{"type", "code", "message", "param"} {
		if !e.Get(k).Exists() {
			t.Errorf("error without %q: %s", k, m.Raw)
		}
	}
	if m.Get("type").String() != "error" || m.Get("status").Int() != int64(status) || e.Get("type").String() != typ ||
		e.Get("code").String() != code || e.Get("param").String() != param {
		t.Errorf("got %s, want status %d type %s code %q param %q", m.Raw, status, typ, code, param)
	}
}

func waitWSConns(t *testing.T, s *relaytest.Server, account string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := s.WaitWSConns(ctx, account, n); err != nil {
		t.Fatalf("waiting for %d connections to %q: %v (have %d)", n, account, err, s.WSConns(account))
	}
}

var (
	idPattern      = regexp.MustCompile(`"(resp|msg|fc|call)_[0-9a-f]+"`)
	createdPattern = regexp.MustCompile(`"created_at":[0-9]+`)
)

// normalize blanks what differs between two runs of the same request.
func normalize(s string) string {
	s = idPattern.ReplaceAllString(s, `"${1}_x"`)
	return createdPattern.ReplaceAllString(s, `"created_at":0`)
}

func TestWSEventsMatchSSE(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	for _, body := range []string{
		`"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":"hello world"}]}],"store":false`,
		`"model":"gpt-5","input":"call it","tools":[{"type":"function","name":"lookup","parameters":{}}],"reasoning":{"effort":"low"}`,
	} {
		_, events, err := stream(t, s, "a", `{"stream":true,`+body+`}`)
		if err != nil {
			t.Fatal(err)
		}
		ms := wsTurn(t, c, `{"type":"response.create",`+body+`}`)
		if len(ms) != len(events) {
			t.Fatalf("%d messages, %d SSE events", len(ms), len(events))
		}
		checkSeq(t, ms)
		for i := range ms {
			if got, want := normalize(ms[i].Raw), normalize(string(events[i].Data)); got != want {
				t.Errorf("message %d:\n got %s\nwant %s", i, got, want)
			}
		}
	}
}

func TestWSChainedTurnsStoreFalse(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	first := wsTurn(t, c, `{"type":"response.create","model":"gpt-5","store":false,"input":"hello world"}`)
	if !equal(msgTypes(first), textTurn(5, "response.completed")) {
		t.Fatalf("first turn %v", msgTypes(first))
	}
	checkSeq(t, first)
	id1 := completedID(t, first)
	second := wsTurn(t, c, `{"type":"response.create","model":"gpt-5","store":false,"previous_response_id":"`+id1+`","input":"again"}`)
	checkSeq(t, second)
	id2 := completedID(t, second)
	end := second[len(second)-1]
	// 10+1 words, plus the 12 in and 5 out of the first turn, 12 cached.
	if u := end.Get("response.usage"); u.Get("input_tokens").Int() != 28 || u.Get("input_tokens_details.cached_tokens").Int() != 12 {
		t.Errorf("usage %s", u.Raw)
	}
	if end.Get("response.previous_response_id").String() != id1 || end.Get("response.store").Bool() {
		t.Errorf("response %s", end.Get("response").Raw)
	}
	// Neither response was stored: over HTTP the id is unknown.
	resp, b := call(t, s, "a", `{"model":"gpt-5","previous_response_id":"`+id1+`"}`)
	if resp.StatusCode != 400 || gjson.GetBytes(b, "error.code").String() != "previous_response_not_found" {
		t.Errorf("HTTP continuation: %d %s", resp.StatusCode, b)
	}

	reqs := s.Requests()
	if len(reqs) != 4 || reqs[0].Method != "GET" || reqs[1].Method != "WS" || reqs[2].Method != "WS" || reqs[3].Method != "POST" ||
		reqs[1].Path != "/a/v1/responses" || reqs[1].Account != "a" || reqs[1].Header.Get("Authorization") != "Bearer "+testKey ||
		gjson.GetBytes(reqs[2].Body, "previous_response_id").String() != id1 {
		t.Errorf("requests %+v", reqs)
	}
	served := s.Served()
	if len(served) != 4 {
		t.Fatalf("served %+v", served)
	}
	up, t1, t2 := served[0], served[1], served[2]
	if !up.WebSocket || up.HTTPStatus != 101 || up.Status != "upgraded" || !strings.HasPrefix(up.RequestID, "req_") {
		t.Errorf("upgrade %+v", up)
	}
	want1 := relaytest.Served{Account: "a", WebSocket: true, RequestID: up.RequestID, ResponseID: id1, Model: "gpt-5",
		Stream: true, Status: "completed", Usage: relaytest.Usage{Input: 12, Output: 5}, Events: len(first)}
	if t1 != want1 {
		t.Errorf("turn 1 %+v\nwant %+v", t1, want1)
	}
	if t2.ResponseID != id2 || t2.Usage.Cached != 12 || t2.RequestID != up.RequestID {
		t.Errorf("turn 2 %+v", t2)
	}
	if served[3].WebSocket {
		t.Errorf("HTTP request recorded as WebSocket: %+v", served[3])
	}
	if s.WSConns("a") != 1 || s.InFlight("a") != 0 || s.MaxInFlight("a") != 1 {
		t.Errorf("conns %d, in flight %d, max %d", s.WSConns("a"), s.InFlight("a"), s.MaxInFlight("a"))
	}
	c.Close(websocket.StatusNormalClosure, "")
	waitWSConns(t, s, "a", 0)
}

func TestWSPreviousNotFoundOnNewConnection(t *testing.T) {
	s := newServer(t)
	c1 := openWS(t, s, "a")
	id := completedID(t, wsTurn(t, c1, `{"type":"response.create","model":"m","store":false,"input":"x"}`))
	c1.Close(websocket.StatusNormalClosure, "")

	c2 := openWS(t, s, "a")
	ms := wsTurn(t, c2, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id+`","input":"y"}`)
	if len(ms) != 1 {
		t.Fatalf("messages %v", msgTypes(ms))
	}
	checkError(t, ms[0], 400, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	if !strings.Contains(ms[0].Get("error.message").String(), id) {
		t.Errorf("message %s", ms[0].Raw)
	}
	// The connection stays usable.
	completedID(t, wsTurn(t, c2, `{"type":"response.create","model":"m","store":false,"input":"full input again"}`))
	if sv := s.Served(); sv[3].Status != "error" || sv[3].HTTPStatus != 400 || sv[3].Code != "previous_response_not_found" {
		t.Errorf("served %+v", sv[3])
	}
}

func TestWSStoreTrueAcrossConnections(t *testing.T) {
	s := newServer(t)
	c1 := openWS(t, s, "a")
	id1 := completedID(t, wsTurn(t, c1, `{"type":"response.create","model":"m","input":"one two"}`))
	c2 := openWS(t, s, "a")
	ms := wsTurn(t, c2, `{"type":"response.create","model":"m","previous_response_id":"`+id1+`","input":"three"}`)
	id2 := completedID(t, ms)
	if ms[len(ms)-1].Get("response.usage.input_tokens_details.cached_tokens").Int() != 12 {
		t.Errorf("usage %s", ms[len(ms)-1].Get("response.usage").Raw)
	}
	// Stored responses are shared with HTTP, and stay per account.
	if resp, b := call(t, s, "a", `{"model":"m","previous_response_id":"`+id2+`"}`); resp.StatusCode != 200 {
		t.Errorf("HTTP continuation: %d %s", resp.StatusCode, b)
	}
	c3 := openWS(t, s, "b")
	m := wsTurn(t, c3, `{"type":"response.create","model":"m","previous_response_id":"`+id1+`"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	if s.WSConns("a") != 2 || s.WSConns("b") != 1 {
		t.Errorf("connections %d %d", s.WSConns("a"), s.WSConns("b"))
	}
}

func TestWSWarmup(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	ms := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"generate":false,"instructions":"be brief",`+
		`"tools":[{"type":"function","name":"f"}],"reasoning":{"effort":"high"},"input":[]}`)
	if !equal(msgTypes(ms), []string{"response.created", "response.completed"}) {
		t.Fatalf("warm-up %v", msgTypes(ms))
	}
	checkSeq(t, ms)
	end := ms[1].Get("response")
	warm := end.Get("id").String()
	if !strings.HasPrefix(warm, "resp_") || end.Get("output").Raw != "[]" || end.Get("status").String() != "completed" ||
		ms[0].Get("response.id").String() != warm {
		t.Errorf("warm-up response %s", end.Raw)
	}
	// Input is counted (10 + "be brief"), output is not.
	if u := end.Get("usage"); u.Get("input_tokens").Int() != 12 || u.Get("output_tokens").Int() != 0 ||
		u.Get("output_tokens_details.reasoning_tokens").Int() != 0 {
		t.Errorf("warm-up usage %s", u.Raw)
	}
	next := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+warm+`","input":"hi"}`)
	completedID(t, next)
	if got := next[len(next)-1].Get("response.usage.input_tokens_details.cached_tokens").Int(); got != 12 {
		t.Errorf("cached after warm-up %d", got)
	}
	if sv := s.Served(); sv[1].Events != 2 || sv[1].Usage != (relaytest.Usage{Input: 12}) || sv[1].ResponseID != warm {
		t.Errorf("served %+v", sv[1])
	}
	m := wsTurn(t, c, `{"type":"response.create","model":"m","generate":"no"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "invalid_type", "generate")
}

func TestWSValidationKeepsConnectionOpen(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	for _, tc := range []struct {
		msg, code, param, text string
	}{
		{`{"type":"response.create","input":"x"}`, "missing_required_parameter", "model", "model"},
		{`{"type":"response.create","model":"m","input":[{"type":"function_call_output","call_id":"call_1","output":"4"}]}`, "", "input", "call_1"},
		{`{"type":"response.create","model":"m","previous_response_id":"resp_unknown"}`, "previous_response_not_found", "previous_response_id", "resp_unknown"},
		{`{"type":"response.create","model":"m","stream":"yes"}`, "invalid_type", "stream", "stream"},
		{`{"type":"response.append","input":[]}`, "unsupported_event_type", "", "response.create"},
		{`{"type":"session.update"}`, "unsupported_event_type", "", "session.update"},
		{`{"model":"m"}`, "missing_required_parameter", "type", "type"},
		{`not json`, "", "", "JSON"},
		{`["response.create"]`, "", "", "JSON"},
	} {
		m := wsTurn(t, c, tc.msg)[0]
		checkError(t, m, 400, "invalid_request_error", tc.code, tc.param)
		if !strings.Contains(m.Get("error.message").String(), tc.text) {
			t.Errorf("%s: message %s", tc.msg, m.Get("error.message"))
		}
	}
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","input":"still here"}`))

	// Messages that are not response.create take no step; each turn takes one.
	s.Script("a", relaytest.Step{Status: 500})
	checkError(t, wsTurn(t, c, `{"type":"response.append"}`)[0], 400, "invalid_request_error", "unsupported_event_type", "")
	checkError(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0], 500, "server_error", "", "")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))

	served := s.Served()
	if len(served) != 1+9+1+3 {
		t.Fatalf("served %d", len(served))
	}
	for _, sv := range served[1:10] {
		if !sv.WebSocket || sv.Status != "error" || sv.HTTPStatus != 400 || sv.Events != 0 {
			t.Errorf("served %+v", sv)
		}
	}
	if s.InFlight("a") != 0 || s.MaxInFlight("a") != 1 {
		t.Errorf("in flight %d, max %d", s.InFlight("a"), s.MaxInFlight("a"))
	}
}

func TestWSFunctionCallChain(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	ms := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"input":"weather?","tools":[{"type":"function","name":"get_weather"}]}`)
	if !equal(msgTypes(ms), fcTurn(5)) {
		t.Fatalf("turn %v", msgTypes(ms))
	}
	end := ms[len(ms)-1].Get("response")
	callID := end.Get("output.0.call_id").String()
	if end.Get("output.0.name").String() != "get_weather" || !strings.HasPrefix(callID, "call_") {
		t.Fatalf("output %s", end.Get("output").Raw)
	}
	// The tool output chains on the connection-local response.
	ms = wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+end.Get("id").String()+
		`","input":[{"type":"function_call_output","call_id":"`+callID+`","output":"sunny"}]}`)
	if got := ms[len(ms)-1].Get("response.output.0.content.0.text").String(); got != "Function output received: sunny" {
		t.Errorf("text %q", got)
	}
	m := wsTurn(t, c, `{"type":"response.create","model":"m","input":[{"type":"function_call_output","call_id":"`+callID+`","output":"x"}]}`)[0]
	checkError(t, m, 400, "invalid_request_error", "", "input")
}

func TestWSFailedTurnEvicts(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	id1 := completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"input":"x"}`))
	// A failure that does not continue id1 leaves it cached.
	s.Script("a", relaytest.Step{Status: 429})
	checkError(t, wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"input":"y"}`)[0], 429, "rate_limit_error", "rate_limit_exceeded", "")
	// A failed continuation evicts it.
	s.Script("a", relaytest.Step{InBandFailed: "server_is_overloaded"})
	ms := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id1+`","input":"z"}`)
	if ms[len(ms)-1].Get("type").String() != "response.failed" {
		t.Fatalf("turn %v", msgTypes(ms))
	}
	m := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id1+`","input":"z"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	// Stored responses are still found after a failed continuation.
	id2 := completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","input":"stored"}`))
	s.Script("a", relaytest.Step{FailAfterOutput: "server_error"})
	wsTurn(t, c, `{"type":"response.create","model":"m","previous_response_id":"`+id2+`"}`)
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","previous_response_id":"`+id2+`"}`))
}

func TestWSFaultsInBand(t *testing.T) {
	s := newServer(t)
	c := openWS(t, s, "a")
	s.Script("a",
		relaytest.Step{InBandFailed: "server_is_overloaded"},
		relaytest.Step{ErrorEvent: true, InBandFailed: "rate_limit_exceeded"},
		relaytest.Step{FailAfterOutput: "server_error"},
		relaytest.Step{Incomplete: "max_output_tokens", Deltas: 2},
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
	s.Script("a", relaytest.Step{ResetAfterEvents: 4}, relaytest.Step{ResetBeforeHeaders: true}, relaytest.Step{ResetAfterEvents: 100})
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
	s.Script("a", relaytest.Step{IdleAfterEvents: 3}, relaytest.Step{Status: 500})
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
	s.Script("a", relaytest.Step{Hold: release}, relaytest.Step{Hang: true}, relaytest.Step{NoTerminal: true})
	c := openWS(t, s, "a")
	wsSend(t, c, `{"type":"response.create","model":"m","input":"held"}`)
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := s.WaitInFlight(ctx, "a", 1); err != nil {
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
	if err := s.WaitInFlight(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	c.CloseNow()
	waitWSConns(t, s, "a", 0)
	if sv := s.Served(); sv[len(sv)-1].Status != "aborted" || sv[len(sv)-1].Events != 0 || s.InFlight("a") != 0 {
		t.Errorf("hung turn %+v", sv[len(sv)-1])
	}

	// NoTerminal: the output, then a normal close before any terminal event.
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

func TestWSUpgrade(t *testing.T) {
	s := newServer(t)
	body := func(resp *http.Response) []byte {
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	// Authentication comes before the upgrade.
	_, resp, err := dialWS(t, s, "a", "Authorization", "")
	if err == nil || resp == nil || resp.StatusCode != 401 || gjson.GetBytes(body(resp), "error.type").String() != "authentication_error" {
		t.Errorf("no key: %v %v", err, resp)
	}
	s.SetKey("pinned", "sk-right-key-1234567890")
	_, resp, err = dialWS(t, s, "pinned", "Authorization", "Bearer sk-wrong-key-1234567890")
	if err == nil || resp == nil || resp.StatusCode != 401 || gjson.GetBytes(body(resp), "error.code").String() != "invalid_api_key" {
		t.Errorf("wrong key: %v %v", err, resp)
	}
	if _, _, err = dialWS(t, s, "pinned", "Authorization", "Bearer sk-right-key-1234567890"); err != nil {
		t.Errorf("right key: %v", err)
	}

	// Upgrade scripts: a status instead of the upgrade, a reset, a default.
	s.ScriptUpgrade("a", relaytest.Step{Status: 429, Header: http.Header{"Retry-After": {"3"}}}, relaytest.Step{ResetBeforeHeaders: true})
	_, resp, err = dialWS(t, s, "a")
	if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" ||
		gjson.GetBytes(body(resp), "error.code").String() != "rate_limit_exceeded" {
		t.Errorf("429: %v %v", err, resp)
	}
	// A fresh connection: net/http retries a GET cut on a reused one.
	s.Client().CloseIdleConnections()
	if _, resp, err = dialWS(t, s, "a"); err == nil || resp != nil {
		t.Errorf("reset: %v %v", err, resp)
	}
	s.SetUpgradeDefault("a", relaytest.Step{Status: 426})
	if _, resp, _ = dialWS(t, s, "a"); resp == nil || resp.StatusCode != 426 {
		t.Errorf("default 426: %v", resp)
	}
	s.SetUpgradeDefault("a", relaytest.Step{})

	// The 101 carries the usual headers and the step's.
	s.ScriptUpgrade("a", relaytest.Step{Header: http.Header{"X-Codex-Primary-Used-Percent": {"12"}}})
	// Upgrades do not take the account's turn steps.
	s.Script("a", relaytest.Step{Status: 502})
	c, resp, err := dialWS(t, s, "a")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") ||
		resp.Header.Get("X-Codex-Primary-Used-Percent") != "12" || resp.Header.Get("Content-Type") != "" {
		t.Errorf("101 headers %v", resp.Header)
	}
	checkError(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0], 502, "server_error", "", "")

	// Hold keeps the upgrade in flight.
	release := make(chan struct{})
	s.ScriptUpgrade("h", relaytest.Step{Hold: release})
	errc := make(chan error, 1)
	go func() {
		_, _, err := dialWS(t, s, "h")
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	if err := s.WaitInFlight(ctx, "h", 1); err != nil {
		t.Fatal(err)
	}
	if s.WSConns("h") != 0 {
		t.Error("held upgrade counted as open")
	}
	close(release)
	if err := <-errc; err != nil {
		t.Errorf("held upgrade: %v", err)
	}
	if s.InFlight("h") != 0 || s.WSConns("h") != 1 {
		t.Errorf("after upgrade: in flight %d, conns %d", s.InFlight("h"), s.WSConns("h"))
	}

	var got []string
	for _, sv := range s.Served() {
		if !sv.WebSocket {
			t.Errorf("not marked WebSocket: %+v", sv)
		}
		got = append(got, sv.Status)
	}
	want := []string{"error", "error", "upgraded", "error", "aborted", "error", "upgraded", "error", "upgraded"}
	if !equal(got, want) {
		t.Errorf("served %v\nwant %v", got, want)
	}
}

func TestWSPlainGetAndBadHandshake(t *testing.T) {
	s := newServer(t)
	do := func(hdr http.Header) int {
		req, _ := http.NewRequest(http.MethodGet, s.BaseURL("a")+"/responses", nil)
		req.Header = hdr
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(http.Header{}); got != 426 {
		t.Errorf("plain GET: %d", got)
	}
	// Upgrade headers without a valid handshake: the WebSocket library's 400.
	if got := do(http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}); got != 400 {
		t.Errorf("bad handshake: %d", got)
	}
	if sv := s.Served(); len(sv) != 2 || sv[0].WebSocket || !sv[1].WebSocket || sv[1].HTTPStatus != 400 || sv[1].Status != "error" ||
		s.InFlight("a") != 0 || s.WSConns("a") != 0 {
		t.Errorf("served %+v", sv)
	}
}

func TestWSMaxAge(t *testing.T) {
	s := newServer(t)
	s.SetWSMaxAge(time.Hour)
	c := openWS(t, s, "a")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	// The limit applies to open connections at the next turn.
	s.SetWSMaxAge(time.Nanosecond)
	m := wsTurn(t, c, `{"type":"response.create","model":"m"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "websocket_connection_limit_reached", "")
	if !strings.Contains(m.Get("error.message").String(), "new websocket connection") {
		t.Errorf("message %s", m.Get("error.message"))
	}
	if _, err := wsReadUntilError(c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("close %v", err)
	}
	waitWSConns(t, s, "a", 0)
	s.SetWSMaxAge(-1)
	c = openWS(t, s, "a")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	s.SetWSMaxAge(0) // the default 60 minutes
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
}

func TestWSURL(t *testing.T) {
	s := newServer(t)
	if got, want := s.WSURL(""), "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/responses"; got != want {
		t.Errorf("WSURL(\"\") = %q, want %q", got, want)
	}
	if got := s.WSURL("team 1"); !strings.HasSuffix(got, "/team%201/v1/responses") || !strings.HasPrefix(got, "ws://") {
		t.Errorf("WSURL(team 1) = %q", got)
	}
	c := openWS(t, s, "team 1")
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m"}`))
	if s.WSConns("team 1") != 1 || s.WSConns("other") != 0 {
		t.Errorf("conns %d", s.WSConns("team 1"))
	}
}

func TestWSCloseEndsEverything(t *testing.T) {
	s := relaytest.NewServer()
	s.Script("hang", relaytest.Step{Hang: true})
	s.Script("idle", relaytest.Step{IdleAfterEvents: 2})
	s.Script("hold", relaytest.Step{Hold: make(chan struct{})})
	s.Script("slow", relaytest.Step{FirstTokenDelay: time.Hour})
	accounts := []string{"hang", "idle", "hold", "slow", "quiet"}
	var wg sync.WaitGroup
	errs := make(chan error, len(accounts))
	for _, a := range accounts {
		c := openWS(t, s, a)
		if a != "quiet" {
			wsSend(t, c, `{"type":"response.create","model":"m"}`)
		}
		wg.Go(func() {
			_, err := wsReadUntilError(c)
			errs <- err
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), wsTimeout)
	defer cancel()
	for _, a := range accounts[:4] {
		if err := s.WaitInFlight(ctx, a, 1); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if websocket.CloseStatus(err) != -1 {
			t.Errorf("read ended with %v, want a cut connection", err)
		}
	}
	for _, a := range accounts {
		if s.WSConns(a) != 0 || s.InFlight(a) != 0 {
			t.Errorf("%s: conns %d, in flight %d", a, s.WSConns(a), s.InFlight(a))
		}
	}
	for _, g := range leakedGoroutines() {
		if strings.Contains(g, "relaytest.(") {
			t.Errorf("server goroutine left after Close:\n%s", g)
		}
	}
	if sv := s.Served(); len(sv) != 5+4 {
		t.Errorf("served %d", len(sv))
	}
	if leaks := waitNoLeaks(5 * time.Second); len(leaks) > 0 {
		t.Errorf("leaked:\n%s", strings.Join(leaks, "\n\n"))
	}
}

func TestWSConcurrentConnections(t *testing.T) {
	s := newServer(t)
	s.SetDefault("a", relaytest.Step{Deltas: 20})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, _, err := dialWS(t, s, "a")
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close(websocket.StatusNormalClosure, "")
			prev := ""
			for range 5 {
				msg := `{"type":"response.create","model":"m","store":false,"input":"go"` + prev + `}`
				if err := c.Write(context.Background(), websocket.MessageText, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
				for {
					m, err := wsRecv(c)
					if err != nil {
						t.Error(err)
						return
					}
					if m.Get("type").String() == "response.completed" {
						prev = `,"previous_response_id":"` + m.Get("response.id").String() + `"`
						break
					}
					if isEnd(m) {
						t.Errorf("turn ended with %s", m.Raw)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	waitWSConns(t, s, "a", 0)
	if got := len(s.Served()); got != 8*6 {
		t.Errorf("served %d", got)
	}
	if s.InFlight("a") != 0 || s.MaxInFlight("a") < 1 {
		t.Errorf("in flight %d, max %d", s.InFlight("a"), s.MaxInFlight("a"))
	}
}
