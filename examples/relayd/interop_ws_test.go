package main

// Interop with the WebSocket mode of the openai-go SDK
// (client.Beta.Responses.Connect): the SDK opens GET /v1/responses on
// relayd, and relayd pins an upstream WebSocket or bridges to HTTP.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"
)

// connect opens the SDK's WebSocket mode on relayd; the connection is
// closed when the test ends.
func (e *env) connect(key string) *openai.BetaResponseConnection {
	e.t.Helper()
	client := e.sdk(key)
	conn, err := client.Beta.Responses.Connect(e.t.Context(), openai.BetaResponseConnectionOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// wsCreate is a response.create message for gpt-5 with a text input.
func wsCreate(input string) openai.BetaResponsesClientEventResponseCreateParam {
	return openai.BetaResponsesClientEventResponseCreateParam{
		Model: "gpt-5",
		Input: openai.BetaResponsesClientEventResponseCreateInputUnionParam{OfString: openai.String(input)},
	}
}

// wsTurn sends one response.create and reads its events up to the terminal
// one or an error event.
func wsTurn(t *testing.T, conn *openai.BetaResponseConnection, p openai.BetaResponsesClientEventResponseCreateParam) []openai.BetaResponsesServerEventUnion {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := conn.Send(ctx, openai.BetaResponsesClientEventUnionParam{OfResponseCreate: &p}); err != nil {
		t.Fatal(err)
	}
	return recvTurn(ctx, t, conn)
}

func recvTurn(ctx context.Context, t *testing.T, conn *openai.BetaResponseConnection) []openai.BetaResponsesServerEventUnion {
	t.Helper()
	var events []openai.BetaResponsesServerEventUnion
	for {
		ev, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("after %d events: %v", len(events), err)
		}
		events = append(events, ev)
		switch ev.Type {
		case "response.completed", "response.incomplete", "response.failed", "error":
			return events
		}
	}
}

// completedTurn checks that a turn completed and returns its response, with
// the text its deltas carried.
func completedTurn(t *testing.T, events []openai.BetaResponsesServerEventUnion) (openai.BetaResponse, string) {
	t.Helper()
	last := events[len(events)-1]
	if last.Type != "response.completed" || events[0].Type != "response.created" {
		t.Fatalf("turn ended with %s: %s", last.Type, last.RawJSON())
	}
	var text strings.Builder
	for _, ev := range events {
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.AsResponseOutputTextDelta().Delta)
		}
	}
	return last.AsResponseCompleted().Response, text.String()
}

// upstreamTraffic counts what reached the fake: WebSocket upgrades (GET),
// WebSocket messages ("WS") and POSTs, per account.
func (e *env) upstreamTraffic() map[string]map[string]int {
	m := map[string]map[string]int{}
	for _, r := range e.up.Requests() {
		if m[r.Account] == nil {
			m[r.Account] = map[string]int{}
		}
		m[r.Account][r.Method]++
	}
	return m
}

// wsRows reads the usage rows ordered by turn number.
func wsRows(t *testing.T, e *env) []usageRow {
	t.Helper()
	var rows []usageRow
	for _, r := range e.rows() {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b usageRow) int { return int(a.Turn - b.Turn) })
	return rows
}

// Two store=false turns chained with previous_response_id over one SDK
// connection ride one pinned upstream WebSocket: the second turn resolves
// from the upstream connection's local cache, which no other socket has.
func TestInteropWebSocketPinnedChain(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2"}, func(c *Config) {
		for i := range c.Accounts {
			c.Accounts[i].WebSocket = true
		}
	})
	conn := e.connect(keyAlice)

	p := wsCreate("my name is Ada")
	p.Store = openai.Bool(false)
	first, text := completedTurn(t, wsTurn(t, conn, p))
	if text != "Echo: my name is Ada" || !strings.HasPrefix(first.ID, "resp_") || first.Model != "gpt-5" {
		t.Fatalf("first turn: %q %s %s", text, first.ID, first.Model)
	}
	p = wsCreate("what is my name")
	p.Store = openai.Bool(false)
	p.PreviousResponseID = openai.String(first.ID)
	second, text := completedTurn(t, wsTurn(t, conn, p))
	if text != "Echo: what is my name" {
		t.Fatalf("second turn: %q", text)
	}
	// The fake counts a continued response as cached input.
	if second.Usage.InputTokensDetails.CachedTokens != first.Usage.InputTokens {
		t.Fatalf("second turn cached %d, first had %d input tokens", second.Usage.InputTokensDetails.CachedTokens, first.Usage.InputTokens)
	}

	traffic := e.upstreamTraffic()
	if len(traffic) != 1 {
		t.Fatalf("turns spread over accounts: %v", traffic)
	}
	var acct string
	for a, n := range traffic {
		acct = a
		if n[http.MethodGet] != 1 || n["WS"] != 2 || n[http.MethodPost] != 0 {
			t.Fatalf("account %s saw %v; want 1 upgrade and 2 messages", a, n)
		}
	}
	if n := e.up.WSConns(acct); n != 1 {
		t.Fatalf("%d upstream sockets open on %s", n, acct)
	}
	var msgs []string
	for _, r := range e.up.Requests() {
		switch r.Method {
		case http.MethodGet:
			if r.Header.Get("Authorization") != "Bearer "+upstreamKey(acct) || !strings.HasPrefix(r.Header.Get("OpenAI-Beta"), "responses_websockets=") {
				t.Fatalf("upgrade headers: auth %q, beta %q", r.Header.Get("Authorization"), r.Header.Get("OpenAI-Beta"))
			}
		case "WS":
			msgs = append(msgs, string(r.Body))
		}
	}
	if gjson.Get(msgs[1], "store").Type != gjson.False || gjson.Get(msgs[1], "previous_response_id").String() != first.ID {
		t.Fatalf("second message upstream: %s", msgs[1])
	}

	served := servedByResponse(e.up.Upstream)
	rows := wsRows(t, e)
	if len(rows) != 2 {
		t.Fatalf("rows = %d, want 2", len(rows))
	}
	for i, want := range []string{first.ID, second.ID} {
		row := rows[i]
		if row.ResponseID != want || row.Transport != "ws" || row.Turn != int64(i+1) || !row.Stream ||
			row.Status != "completed" || row.AccountID != acct || row.UserID != "alice" {
			t.Fatalf("row %d = %+v", i, row)
		}
		if s := served[want]; !s.WebSocket {
			t.Fatalf("upstream served %s over HTTP", want)
		}
		checkUsage(t, row, served[want].Usage)
	}
	// The connection is one access log line, written as its handler ends
	// (just after Shutdown saw it close).
	e.logs.waitFor(t, `msg="relayd: request" method=GET path=/v1/responses status=101`)
}

// Accounts without upstream WebSocket support get the HTTP bridge: each
// turn of the SDK connection is a streaming POST upstream.
//
// The chain uses store=true, then store=false: each bridged turn is a
// separate HTTP request and the upstream keeps nothing of a store=false
// response, so the relay keeps the connection's last response itself (as
// the upstream's connection-local cache would) and sends a store=false
// continuation with its whole context: three chained store=false turns
// succeed.
func TestInteropWebSocketBridgeChain(t *testing.T) {
	e := newEnv(t, []string{"a1", "a2"}, nil)
	conn := e.connect(keyAlice)

	first, text := completedTurn(t, wsTurn(t, conn, wsCreate("my name is Ada")))
	if text != "Echo: my name is Ada" {
		t.Fatalf("first turn: %q", text)
	}
	p := wsCreate("what is my name")
	p.PreviousResponseID = openai.String(first.ID)
	second, text := completedTurn(t, wsTurn(t, conn, p))
	if text != "Echo: what is my name" || second.Usage.InputTokensDetails.CachedTokens != first.Usage.InputTokens {
		t.Fatalf("second turn: %q, cached %d", text, second.Usage.InputTokensDetails.CachedTokens)
	}
	reqs := e.up.Requests()
	if len(reqs) != 2 || reqs[0].Account != reqs[1].Account {
		t.Fatalf("upstream requests: %v", e.upstreamTraffic())
	}
	for i, r := range reqs {
		if r.Method != http.MethodPost || !gjson.GetBytes(r.Body, "stream").Bool() || gjson.GetBytes(r.Body, "type").Exists() {
			t.Fatalf("bridged request %d: %s %s", i, r.Method, r.Body)
		}
	}
	if gjson.GetBytes(reqs[1].Body, "previous_response_id").String() != first.ID {
		t.Fatalf("previous_response_id not passed: %s", reqs[1].Body)
	}

	// store=false through the bridge: three chained turns, each sent with
	// the context the relay kept.
	prevID := ""
	for i, in := range []string{"not kept", "continue it", "and again"} {
		p = wsCreate(in)
		p.Store = openai.Bool(false)
		if prevID != "" {
			p.PreviousResponseID = openai.String(prevID)
		}
		resp, text := completedTurn(t, wsTurn(t, conn, p))
		if text != "Echo: "+in {
			t.Fatalf("store=false turn %d: %q", i+1, text)
		}
		prevID = resp.ID
	}
	reqs = e.up.Requests()
	sent := reqs[len(reqs)-1].Body
	if gjson.GetBytes(sent, "previous_response_id").Exists() {
		t.Fatalf("the bridged store=false continuation names its previous response: %s", sent)
	}
	if in := gjson.GetBytes(sent, "input").Raw; !strings.Contains(in, "not kept") || !strings.Contains(in, "Echo: continue it") || !strings.Contains(in, "and again") {
		t.Fatalf("the bridged continuation lacks its context: %s", in)
	}

	served := servedByResponse(e.up.Upstream)
	byResponse := map[string]usageRow{}
	for _, r := range e.rows() {
		byResponse[r.ResponseID] = r
	}
	for i, id := range []string{first.ID, second.ID} {
		row, ok := byResponse[id]
		if !ok {
			t.Fatalf("no row for %s", id)
		}
		if row.Transport != "ws" || row.Turn != int64(i+1) || row.Status != "completed" || served[id].WebSocket {
			t.Fatalf("row %d = %+v", i, row)
		}
		checkUsage(t, row, served[id].Usage)
	}
	if n := e.up.WSConns(reqs[0].Account); n != 0 {
		t.Fatalf("the bridge opened %d upstream sockets", n)
	}
}

// An invalid turn (no model) is answered with an error event the SDK
// decodes, nothing reaches the upstream, and the connection serves the
// next turn.
func TestInteropWebSocketErrorEventKeepsConnection(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.Accounts[0].WebSocket = true })
	conn := e.connect(keyAlice)

	p := wsCreate("no model")
	p.Model = ""
	events := wsTurn(t, conn, p)
	if len(events) != 1 || events[0].Type != "error" {
		t.Fatalf("events %d, last %s", len(events), events[len(events)-1].RawJSON())
	}
	ev := events[0].AsBetaResponsesServerEventBetaResponseWsError()
	if ev.Status != 400 || ev.Error.Type != "invalid_request_error" || ev.Error.Message != "model is required" || ev.Error.Param != "model" {
		t.Fatalf("error event %s", events[0].RawJSON())
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("the invalid turn reached the upstream (%d requests)", n)
	}

	resp, text := completedTurn(t, wsTurn(t, conn, wsCreate("still here?")))
	if text != "Echo: still here?" {
		t.Fatalf("next turn: %q", text)
	}
	rows := e.rows()
	if len(rows) != 1 {
		t.Fatalf("rows = %d, want 1 (the invalid turn leaves none)", len(rows))
	}
	for _, row := range rows {
		if row.ResponseID != resp.ID || row.Transport != "ws" || row.Status != "completed" {
			t.Fatalf("row = %+v", row)
		}
	}
}

// A bad key fails Connect with the 401 of the upgrade, in OpenAI's shape.
func TestInteropWebSocketBadKey(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.Accounts[0].WebSocket = true })
	client := e.sdk("rk-test-nobody")
	var resp *http.Response
	conn, err := client.Beta.Responses.Connect(t.Context(), openai.BetaResponseConnectionOptions{}, option.WithResponseInto(&resp))
	if err == nil {
		conn.Close()
		t.Fatal("Connect succeeded with a bad key")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("handshake response %v, error %v", resp, err)
	}
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Error struct{ Type, Code, Message string }
	}
	if json.Unmarshal(b, &body) != nil || body.Error.Type != "authentication_error" || body.Error.Code != "invalid_api_key" {
		t.Fatalf("401 body %s", b)
	}
	if n, open := len(e.up.Requests()), e.srv.wsConns.InFlight("wsconn:"+keyID(sha256.Sum256([]byte("rk-test-nobody")))); n != 0 || open != 0 {
		t.Fatalf("upstream requests %d, open connections %d", n, open)
	}
}

// ws_max_conns_per_key caps the open connections of each key: one more is
// refused with 429 before the upgrade, while another key still connects.
func TestWebSocketConnectionCapPerKey(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) { c.WSMaxConnsPerKey = 1 })
	e.connect(keyAlice)
	client := e.sdk(keyAlice)
	var resp *http.Response
	conn, err := client.Beta.Responses.Connect(t.Context(), openai.BetaResponseConnectionOptions{}, option.WithResponseInto(&resp))
	if err == nil {
		conn.Close()
		t.Fatal("a second connection for the key was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second connection: %v, %v", resp, err)
	}
	e.connect(keyBob)
	alice := e.srv.wsConns.InFlight("wsconn:" + keyID(sha256.Sum256([]byte(keyAlice))))
	bob := e.srv.wsConns.InFlight("wsconn:" + keyID(sha256.Sum256([]byte(keyBob))))
	if alice != 1 || bob != 1 {
		t.Fatalf("open connections: alice %d, bob %d, want 1 each", alice, bob)
	}
}
