package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

func TestRoutes(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	get := func(path string, header ...string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, e.ts.URL+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		return e.do(req)
	}
	errorType := func(b []byte) string { return gjson.GetBytes(b, "error.type").String() }

	resp, b := get("/healthz")
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, b)
	}
	resp, b = get("/v1/chat/completions")
	if resp.StatusCode != 404 || errorType(b) != "invalid_request_error" || !gjson.GetBytes(b, "error.code").Exists() {
		t.Fatalf("unknown path: %d %s", resp.StatusCode, b)
	}
	// A path with control bytes or broken UTF-8 still gets valid JSON.
	resp, b = get("/x%01%ffy")
	if resp.StatusCode != 404 || !json.Valid(b) || !strings.Contains(gjson.GetBytes(b, "error.message").String(), "/x\u0001") {
		t.Fatalf("odd path: %d %q", resp.StatusCode, b)
	}
	// A GET that is not a WebSocket upgrade gets 426, key or not.
	for _, hdr := range [][]string{{"Authorization", "Bearer " + keyAlice}, nil} {
		resp, b = get("/v1/responses", hdr...)
		if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" || errorType(b) != "invalid_request_error" {
			t.Fatalf("plain GET (%v): %d %v %s", hdr, resp.StatusCode, resp.Header, b)
		}
	}
	// An upgrade is authenticated before it happens.
	resp, b = get("/v1/responses", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
		"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Authorization", "Bearer rk-test-nobody")
	if resp.StatusCode != 401 || errorType(b) != "authentication_error" || gjson.GetBytes(b, "error.code").String() != "invalid_api_key" {
		t.Fatalf("upgrade with a bad key: %d %s", resp.StatusCode, b)
	}
	req, _ := http.NewRequest(http.MethodPut, e.ts.URL+"/v1/responses", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	resp, b = e.do(req)
	if resp.StatusCode != 405 || errorType(b) != "invalid_request_error" {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	if n := len(e.up.Requests()); n != 0 {
		t.Fatalf("upstream saw %d requests", n)
	}
	// One access log line per request, with the status.
	if logs := e.logs.String(); !strings.Contains(logs, `msg="relayd: request" method=GET path=/v1/chat/completions status=404`) {
		t.Fatalf("no access log line for the 404:\n%s", logs)
	}
}

// model_map and headers of the config reach the upstream; the client sees
// the model it asked for; the row keeps both names.
func TestAccountConfigReachesUpstream(t *testing.T) {
	e := newEnv(t, []string{"a1"}, func(c *Config) {
		c.Accounts[0].Models = []string{"gpt-*"}
		c.Accounts[0].ModelMap = map[string]string{"gpt-5": "gpt-5.5"}
		c.Accounts[0].Headers = map[string]string{"chatgpt-account-id": "acct-42"}
	})
	resp, b := e.post(`{"model":"gpt-5","input":"map me"}`, "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != 200 || gjson.GetBytes(b, "model").String() != "gpt-5" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	got := e.up.Requests()
	if len(got) != 1 {
		t.Fatalf("upstream requests = %d", len(got))
	}
	r := got[0]
	if m := gjson.GetBytes(r.Body, "model").String(); m != "gpt-5.5" {
		t.Errorf("upstream model = %q", m)
	}
	if h := r.Header.Get("Chatgpt-Account-Id"); h != "acct-42" {
		t.Errorf("account header = %q", h)
	}
	if a := r.Header.Get("Authorization"); a != "Bearer "+upstreamKey("a1") {
		t.Errorf("upstream authorization = %q", a)
	}
	if r.Header.Get("X-Api-Key") != "" {
		t.Error("client key header forwarded upstream")
	}

	// A model the account does not serve never reaches it.
	resp, b = e.post(`{"model":"o3","input":"x"}`, "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != 503 || gjson.GetBytes(b, "error.type").String() == "" {
		t.Fatalf("unserved model: %d %s", resp.StatusCode, b)
	}

	rows := e.rows()
	if len(rows) != 1 {
		t.Fatalf("rows = %d, want 1", len(rows))
	}
	for _, row := range rows {
		if row.Model != "gpt-5" || row.UpstreamModel != "gpt-5.5" {
			t.Fatalf("row models %q -> %q", row.Model, row.UpstreamModel)
		}
	}
}

// Keys route to their group's accounts; within a group the lower priority
// is preferred while it is healthy.
func TestGroupsAndPriority(t *testing.T) {
	e := newEnv(t, []string{"main", "backup", "vip"}, func(c *Config) {
		c.Accounts[1].Priority = 1
		c.Accounts[2].Group = "vip"
		c.APIKeys[1].Group = "vip"
	})
	for range 4 {
		if resp, b := e.post(`{"model":"gpt-5","input":"a"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
			t.Fatalf("alice: %d %s", resp.StatusCode, b)
		}
		if resp, b := e.post(`{"model":"gpt-5","input":"b"}`, "Authorization", "Bearer "+keyBob); resp.StatusCode != 200 {
			t.Fatalf("bob: %d %s", resp.StatusCode, b)
		}
	}
	count := map[string]int{}
	for _, r := range e.up.Requests() {
		count[r.Account]++
	}
	if count["main"] != 4 || count["backup"] != 0 || count["vip"] != 4 {
		t.Fatalf("requests per account = %v", count)
	}
	// When the preferred account fails, the turn fails over to the backup.
	e.up.Script("main", relaytest.Step{Status: 500})
	if resp, b := e.post(`{"model":"gpt-5","input":"c"}`, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("failover: %d %s", resp.StatusCode, b)
	}
	last := e.up.Requests()
	if a := last[len(last)-1].Account; a != "backup" {
		t.Fatalf("failover went to %q", a)
	}
	rows := e.rows()
	attempts := 0
	for _, r := range rows {
		if r.AccountID == "backup" {
			attempts = int(r.Attempts)
		}
	}
	if len(rows) != 9 || attempts != 2 {
		t.Fatalf("rows = %d, backup attempts = %d; want 9 rows and 2 attempts", len(rows), attempts)
	}
}

// No configured key, client or upstream, appears in a log line, a
// response, or the usage log: not for good requests, wrong keys, or an
// upstream that rejects its key and echoes a fragment of it.
func TestNoKeysInLogsOrResponses(t *testing.T) {
	e := newEnv(t, []string{"good", "revoked"}, func(c *Config) {
		c.Accounts[1].Priority = -1 // tried first
	})
	// The upstream no longer accepts the key relayd has for "revoked": it
	// answers 401 quoting part of it, as the real API does.
	e.up.SetKey("revoked", "sk-upstream-rotated-0000000000")
	secrets := []string{keyAlice, keyBob, upstreamKey("good"), upstreamKey("revoked")}
	for _, k := range secrets[2:] {
		secrets = append(secrets, k[:6]+"..."+k[len(k)-4:], k[len(k)-8:])
	}

	var seen bytes.Buffer
	record := func(resp *http.Response, b []byte) {
		resp.Header.Write(&seen)
		seen.Write(b)
	}
	record(e.post(`{"model":"gpt-5","input":"hello"}`, "Authorization", "Bearer "+keyAlice))
	record(e.post(`{"model":"gpt-5","input":"hello","stream":true}`, "x-api-key", keyBob))
	record(e.post(`{"model":"gpt-5","input":"hello"}`, "Authorization", "Bearer "+keyAlice+"-wrong"))
	record(e.post(`{"model":"gpt-5","input":"hello"}`, "x-api-key", keyBob[:10]))
	record(e.post(`{"model":"","input":"hello"}`, "Authorization", "Bearer "+keyAlice))

	// Only "revoked" now: every attempt fails with the echoing 401.
	e.up.Script("good", relaytest.Step{Status: 401, Body: `{"error":{"message":"Incorrect API key provided: ` +
		upstreamKey("good") + `.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`})
	resp, b := e.post(`{"model":"gpt-5","input":"hello"}`, "Authorization", "Bearer "+keyAlice)
	record(resp, b)
	if resp.StatusCode != 502 {
		t.Fatalf("all upstream keys rejected: %d %s", resp.StatusCode, b)
	}

	var rejected int
	for _, s := range e.up.Served() {
		if s.HTTPStatus == 401 {
			rejected++
		}
	}
	if rejected < 2 {
		t.Fatalf("upstream rejected %d requests; the test did not exercise the echo", rejected)
	}

	rows := e.rows() // finishes: every log line is written
	dump, _ := json.Marshal(rows)
	logs := e.logs.String()
	if !strings.Contains(logs, "relayd: account health changed") || !strings.Contains(logs, "relayd: usage") {
		t.Fatalf("logs lack the lines this test means to check:\n%s", logs)
	}
	for _, k := range secrets {
		for name, text := range map[string]string{"logs": logs, "responses": seen.String(), "usage rows": string(dump)} {
			if strings.Contains(text, k) {
				t.Errorf("%s contain %q", name, k)
			}
		}
	}
}

// serving is relayd's serve loop on a loopback listener, as main runs it,
// in front of a fake with the account "a1".
type serving struct {
	up     *relaytest.Server
	addr   string
	dbPath string
	logs   *logBuffer
	stop   context.CancelFunc // what SIGINT/SIGTERM does
	exit   chan int
	once   sync.Once
	code   int
}

func startServing(t *testing.T, upstreamWS bool, grace time.Duration) *serving {
	t.Helper()
	r := &serving{up: relaytest.NewServer(), dbPath: t.TempDir() + "/usage.db", logs: newLogBuffer(), exit: make(chan int, 1)}
	cfg := Config{
		Accounts: []AccountConfig{{ID: "a1", BaseURL: r.up.BaseURL("a1"), APIKey: upstreamKey("a1"), WebSocket: upstreamWS}},
		APIKeys:  []APIKeyConfig{{Key: keyAlice, UserID: "alice"}},
		Usage:    UsageConfig{DSN: r.dbPath},
	}
	cfg.applyDefaults()
	logger := slog.New(slog.NewTextHandler(r.logs, nil))
	srv, err := newServer(cfg, logger)
	if err != nil {
		r.up.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close(context.Background())
		r.up.Close()
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() { r.exit <- serve(ctx, ln, srv, grace, logger) }()
	t.Cleanup(func() {
		stop()
		r.up.Close() // releases held turns, should the test have failed
		r.wait()
	})
	return r
}

// wait returns serve's exit code.
func (r *serving) wait() int {
	r.once.Do(func() { r.code = <-r.exit })
	return r.code
}

// connect opens the SDK's WebSocket mode on the served address.
func (r *serving) connect(t *testing.T) *openai.BetaResponseConnection {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	client := newSDK("http://"+r.addr+"/v1", keyAlice, hc)
	conn, err := client.Beta.Responses.Connect(t.Context(), openai.BetaResponseConnectionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// listenerClosed checks that new connections are refused.
func (r *serving) listenerClosed(t *testing.T) {
	t.Helper()
	r.logs.waitFor(t, "relayd: no longer accepting connections")
	if c, err := net.Dial("tcp", r.addr); err == nil {
		c.Close()
		t.Fatal("listener still accepts during shutdown")
	}
}

// SIGINT/SIGTERM: the listener closes, a turn in flight finishes and is
// recorded, and serve returns 0 after the usage queue is drained.
func TestShutdownDrainsInFlightTurns(t *testing.T) {
	r := startServing(t, false, 30*time.Second)
	hold := make(chan struct{})
	r.up.Script("a1", relaytest.Step{Hold: hold})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/v1/responses",
			strings.NewReader(`{"model":"gpt-5","input":"in flight","stream":true}`))
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, b, err}
	}()
	if err := r.up.Wait(t.Context(), func() bool { return r.up.InFlight("a1") == 1 }); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.listenerClosed(t) // while the turn is still held
	close(hold)

	res := <-done
	if res.err != nil || res.status != 200 {
		t.Fatalf("in-flight turn: %d %v", res.status, res.err)
	}
	events, err := relaytest.ReadSSE(bytes.NewReader(res.body))
	if err != nil || events[len(events)-1].Type != "response.completed" {
		t.Fatalf("in-flight stream cut: %v %v", events, err)
	}
	if code := r.wait(); code != 0 {
		t.Fatalf("serve returned %d", code)
	}
	rows := readRows(t, r.dbPath)
	if len(rows) != 1 {
		t.Fatalf("rows = %d, want 1", len(rows))
	}
	for _, row := range rows {
		if row.Status != "completed" {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, r.up.Served()[0].Usage)
	}
	if !strings.Contains(r.logs.String(), "relayd: stopped") {
		t.Fatalf("logs:\n%s", r.logs)
	}
}

// http.Server.Shutdown does not wait for WebSocket connections: relayd
// does. A WebSocket turn in flight at the signal completes, the connection
// is then closed with 1001 (going away), and the turn is recorded before
// serve returns.
func TestShutdownFinishesWebSocketTurns(t *testing.T) {
	r := startServing(t, true, 30*time.Second)
	hold := make(chan struct{})
	r.up.Script("a1", relaytest.Step{Hold: hold})
	conn := r.connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p := wsCreate("in flight")
	if err := conn.Send(ctx, openai.BetaResponsesClientEventUnionParam{OfResponseCreate: &p}); err != nil {
		t.Fatal(err)
	}
	if err := r.up.Wait(ctx, func() bool { return r.up.InFlight("a1") == 1 }); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.listenerClosed(t)
	close(hold)

	resp, text := completedTurn(t, recvTurn(ctx, t, conn))
	if text != "Echo: in flight" {
		t.Fatalf("in-flight turn: %q", text)
	}
	if _, err := conn.Recv(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("after the turn: %v, want a 1001 close", err)
	}
	if code := r.wait(); code != 0 {
		t.Fatalf("serve returned %d:\n%s", code, r.logs)
	}
	rows := readRows(t, r.dbPath)
	if len(rows) != 1 {
		t.Fatalf("rows = %d, want 1", len(rows))
	}
	for _, row := range rows {
		if row.ResponseID != resp.ID || row.Status != "completed" || row.Transport != "ws" || row.Turn != 1 {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, servedByResponse(r.up.Upstream)[resp.ID].Usage)
	}
	if logs := r.logs.String(); strings.Contains(logs, "still running at the shutdown timeout") {
		t.Fatalf("the turn was cut:\n%s", logs)
	}
}

// A WebSocket turn still running when the shutdown timeout ends loses its
// client, but relayd keeps reading the upstream and records the turn before
// it closes the usage log.
func TestShutdownTimeoutStillRecordsWebSocketTurns(t *testing.T) {
	r := startServing(t, true, 100*time.Millisecond)
	hold := make(chan struct{})
	r.up.Script("a1", relaytest.Step{Hold: hold})
	conn := r.connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p := wsCreate("too slow")
	if err := conn.Send(ctx, openai.BetaResponsesClientEventUnionParam{OfResponseCreate: &p}); err != nil {
		t.Fatal(err)
	}
	if err := r.up.Wait(ctx, func() bool { return r.up.InFlight("a1") == 1 }); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.logs.waitFor(t, "relayd: WebSocket turns still running at the shutdown timeout")
	if ev, err := conn.Recv(ctx); err == nil {
		t.Fatalf("event %s after the connection was cut", ev.RawJSON())
	}
	close(hold) // the upstream answers; relayd is still reading it

	if code := r.wait(); code != 0 {
		t.Fatalf("serve returned %d:\n%s", code, r.logs)
	}
	served := servedByResponse(r.up.Upstream)
	rows := readRows(t, r.dbPath)
	if len(rows) != 1 || len(served) != 1 {
		t.Fatalf("rows = %d, upstream responses = %d; want 1 and 1", len(rows), len(served))
	}
	for _, row := range rows {
		s, ok := served[row.ResponseID]
		if !ok || row.Status != "client_gone" || row.Transport != "ws" || row.Output == 0 {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, s.Usage)
	}
}
