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
	"testing"
	"time"

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
	// The WebSocket mode is not served: 426 makes clients use HTTP, but
	// only after the key is checked.
	resp, b = get("/v1/responses", "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" || errorType(b) != "invalid_request_error" {
		t.Fatalf("GET with key: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	resp, b = get("/v1/responses")
	if resp.StatusCode != 401 || errorType(b) != "authentication_error" {
		t.Fatalf("GET without key: %d %s", resp.StatusCode, b)
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

// A JSON turn and a streaming turn each leave one row whose tokens are
// exactly what the upstream sent, including cached and reasoning tokens.
func TestUsageRowsMatchUpstream(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	e.up.Script("a1",
		relaytest.Step{Usage: &relaytest.Usage{Input: 1200, Cached: 1024, Output: 77, Reasoning: 64}},
		relaytest.Step{Usage: &relaytest.Usage{Input: 31, Cached: 0, Output: 9, Reasoning: 3}, Deltas: 9},
	)
	resp, b := e.post(`{"model":"gpt-5","input":"count me"}`, "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != 200 {
		t.Fatalf("json: %d %s", resp.StatusCode, b)
	}
	jsonReq, jsonResp := resp.Header.Get("X-Relay-Request-Id"), gjson.GetBytes(b, "id").String()

	resp, b = e.post(`{"model":"gpt-5","input":"stream me","stream":true}`, "x-api-key", keyAlice)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	events, err := relaytest.ReadSSE(bytes.NewReader(b))
	if err != nil || len(events) == 0 || events[len(events)-1].Type != "response.completed" {
		t.Fatalf("stream events: %v, %v", events, err)
	}
	streamReq := resp.Header.Get("X-Relay-Request-Id")
	streamResp := gjson.GetBytes(events[0].Data, "response.id").String()

	served := servedByResponse(e.up.Upstream)
	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("rows = %d, want 2", len(rows))
	}
	for _, c := range []struct {
		req, resp string
		stream    bool
	}{{jsonReq, jsonResp, false}, {streamReq, streamResp, true}} {
		row, ok := rows[c.req]
		if !ok {
			t.Fatalf("no row for %s", c.req)
		}
		s := served[c.resp]
		if row.ResponseID != c.resp || s.ResponseID != c.resp {
			t.Fatalf("row response %q, relay answered %q, upstream served %q", row.ResponseID, c.resp, s.ResponseID)
		}
		checkUsage(t, row, s.Usage)
		if row.Stream != c.stream || row.Status != "completed" || row.AccountID != "a1" || row.Model != "gpt-5" ||
			row.UpstreamModel != "gpt-5" || row.Transport != "http" || row.Attempts != 1 || row.UserID != "alice" ||
			!row.FirstTokenMS.Valid || row.CreatedAt == "" {
			t.Errorf("row = %+v", row)
		}
	}
	if rows[jsonReq].Input != 1200 || rows[streamReq].Output != 9 {
		t.Fatalf("scripted usage not applied: %+v", rows)
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

// SIGINT/SIGTERM: the listener closes, a turn in flight finishes and is
// recorded, and serve returns 0 after the usage queue is drained.
func TestShutdownDrainsInFlightTurns(t *testing.T) {
	up := relaytest.NewServer()
	defer up.Close()
	dbPath := t.TempDir() + "/usage.db"
	cfg := Config{
		Accounts: []AccountConfig{{ID: "a1", BaseURL: up.BaseURL("a1"), APIKey: upstreamKey("a1")}},
		APIKeys:  []APIKeyConfig{{Key: keyAlice, UserID: "alice"}},
		Usage:    UsageConfig{DSN: dbPath},
	}
	cfg.applyDefaults()
	logs := newLogBuffer()
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := newServer(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	exit := make(chan int, 1)
	go func() { exit <- serve(ctx, ln, srv, 30*time.Second, logger) }()

	hold := make(chan struct{})
	up.Script("a1", relaytest.Step{Hold: hold})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/responses",
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
	if err := up.WaitInFlight(t.Context(), "a1", 1); err != nil {
		t.Fatal(err)
	}
	stop() // as the signal would
	logs.waitFor(t, "relayd: no longer accepting connections")
	// New connections are refused while the turn is still held.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("listener still accepts during shutdown")
	}
	close(hold)

	r := <-done
	if r.err != nil || r.status != 200 {
		t.Fatalf("in-flight turn: %d %v", r.status, r.err)
	}
	events, err := relaytest.ReadSSE(bytes.NewReader(r.body))
	if err != nil || events[len(events)-1].Type != "response.completed" {
		t.Fatalf("in-flight stream cut: %v %v", events, err)
	}
	if code := <-exit; code != 0 {
		t.Fatalf("serve returned %d", code)
	}
	rows := readRows(t, dbPath)
	if len(rows) != 1 {
		t.Fatalf("rows = %d, want 1", len(rows))
	}
	for _, row := range rows {
		if row.Status != "completed" {
			t.Fatalf("row = %+v", row)
		}
		checkUsage(t, row, up.Served()[0].Usage)
	}
	if !strings.Contains(logs.String(), "relayd: stopped") {
		t.Fatalf("logs:\n%s", logs)
	}
}
