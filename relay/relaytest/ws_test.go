package relaytest_test

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
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
	if err := s.Wait(ctx, func() bool { return s.WSConns(account) == n }); err != nil {
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
	want1 := relaytest.Served{Account: "a", WebSocket: true, RequestID: up.RequestID, ResponseID: id1,
		Status: "completed", Usage: relaytest.Usage{Input: 12, Output: 5}, Events: len(first), Seq: 2}
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
	s.Script("a", relaytest.Step{End: "refused server_is_overloaded"})
	ms := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id1+`","input":"z"}`)
	if ms[len(ms)-1].Get("type").String() != "response.failed" {
		t.Fatalf("turn %v", msgTypes(ms))
	}
	m := wsTurn(t, c, `{"type":"response.create","model":"m","store":false,"previous_response_id":"`+id1+`","input":"z"}`)[0]
	checkError(t, m, 400, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	// Stored responses are still found after a failed continuation.
	id2 := completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","input":"stored"}`))
	s.Script("a", relaytest.Step{End: "failed server_error"})
	wsTurn(t, c, `{"type":"response.create","model":"m","previous_response_id":"`+id2+`"}`)
	completedID(t, wsTurn(t, c, `{"type":"response.create","model":"m","previous_response_id":"`+id2+`"}`))
}
