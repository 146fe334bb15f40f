package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// curlCommand is one curl invocation printed by the demo.
type curlCommand struct {
	url    string
	header http.Header
	body   string
	noBuf  bool // -N
}

// parseCurls finds the curl commands in the demo's text. It understands
// what the demo prints: backslash continuations and single quotes.
func parseCurls(t *testing.T, text string) []curlCommand {
	t.Helper()
	var cmds []curlCommand
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "curl ") {
			continue
		}
		full := ""
		for ; i < len(lines); i++ {
			l := strings.TrimSpace(lines[i])
			cont := strings.HasSuffix(l, `\`)
			full += strings.TrimSuffix(l, `\`) + " "
			if !cont {
				break
			}
		}
		words := shellWords(t, full)
		c := curlCommand{header: http.Header{}}
		for j := 1; j < len(words); j++ {
			switch w := words[j]; w {
			case "-sS":
			case "-N":
				c.noBuf = true
			case "-H":
				j++
				k, v, _ := strings.Cut(words[j], ":")
				c.header.Set(k, strings.TrimSpace(v))
			case "-d":
				j++
				c.body = words[j]
			default:
				if !strings.HasPrefix(w, "http://") {
					t.Fatalf("unexpected curl word %q in %q", w, full)
				}
				c.url = w
			}
		}
		cmds = append(cmds, c)
	}
	return cmds
}

func shellWords(t *testing.T, s string) []string {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", s)
	}
	return words
}

func (c curlCommand) do(t *testing.T, client *http.Client) (*http.Response, []byte) {
	t.Helper()
	// curl sends a GET unless -d gives a body.
	method := http.MethodGet
	if c.body != "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, c.url, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = c.header
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// The two curl commands the demo prints work as printed, and so does its
// WebSocket hint; each turn leaves a usage row with the tokens the demo
// upstream sent.
func TestDemoCurlCommandsWork(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "demo.db")
	d, err := startDemo(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.upstream.NoLog = false // to compare with what it served
	logs := newLogBuffer()
	srv, err := newServer(d.cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	closed := false
	finish := func() {
		if !closed {
			closed = true
			ts.Close()
			if err := srv.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}
	defer finish()

	var intro strings.Builder
	d.printIntro(&intro, strings.TrimPrefix(ts.URL, "http://"))
	text := intro.String()
	for _, want := range []string{d.apiKey, dbPath, "Ctrl-C", "curl -sS -N"} {
		if !strings.Contains(text, want) {
			t.Fatalf("intro lacks %q:\n%s", want, text)
		}
	}
	cmds := parseCurls(t, text)
	if len(cmds) != 4 || cmds[0].noBuf || !cmds[1].noBuf {
		t.Fatalf("curl commands = %+v", cmds)
	}

	resp, b := cmds[0].do(t, ts.Client())
	if resp.StatusCode != 200 || gjson.GetBytes(b, "output.0.content.0.text").String() != "Echo: Hello, relay!" {
		t.Fatalf("JSON curl: %d %s", resp.StatusCode, b)
	}
	jsonReq := resp.Header.Get("X-Relay-Request-Id")

	resp, b = cmds[1].do(t, ts.Client())
	events, err := relaytest.ReadSSE(bytes.NewReader(b))
	if resp.StatusCode != 200 || err != nil || len(events) < 3 || events[len(events)-1].Type != "response.completed" {
		t.Fatalf("streaming curl: %d %v %s", resp.StatusCode, err, b)
	}
	streamReq := resp.Header.Get("X-Relay-Request-Id")

	// The operator views, with the printed admin token.
	resp, b = cmds[2].do(t, ts.Client())
	if resp.StatusCode != 200 || gjson.GetBytes(b, `accounts.#(id=="demo").last_status`).Int() != 200 {
		t.Fatalf("accounts curl: %d %s", resp.StatusCode, b)
	}
	resp, b = cmds[3].do(t, ts.Client())
	if resp.StatusCode != 200 || !strings.Contains(string(b), `responsesrelay_turns_total{code_class="2xx",model="gpt-5",status="completed",transport="http"} 2`) {
		t.Fatalf("metrics curl: %d %s", resp.StatusCode, b)
	}

	// The WebSocket hint: the URL, and the SDK base URL it gives works
	// with Connect.
	wsURL := "ws://" + strings.TrimPrefix(ts.URL, "http://") + "/v1/responses"
	for _, want := range []string{wsURL, "client.Beta.Responses.Connect", "supports_websockets = true"} {
		if !strings.Contains(text, want) {
			t.Fatalf("intro lacks %q:\n%s", want, text)
		}
	}
	m := regexp.MustCompile(`option\.WithBaseURL\("([^"]+)"\)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("intro names no base URL:\n%s", text)
	}
	client := newSDK(m[1], d.apiKey, ts.Client())
	conn, err := client.Beta.Responses.Connect(t.Context(), openai.BetaResponseConnectionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := wsCreate("Hello over a WebSocket!")
	p.Model = demoModel
	wsResp, wsText := completedTurn(t, wsTurn(t, conn, p))
	if wsText != "Echo: Hello over a WebSocket!" {
		t.Fatalf("WebSocket turn: %q", wsText)
	}

	finish()
	served := servedByResponse(d.upstream)
	rows := readRows(t, dbPath)
	if len(rows) != 3 {
		t.Fatalf("rows = %d, want 3", len(rows))
	}
	var wsReq string
	for id, row := range rows {
		if row.ResponseID == wsResp.ID {
			wsReq = id
		}
	}
	for _, id := range []string{jsonReq, streamReq, wsReq} {
		row := rows[id]
		s, ok := served[row.ResponseID]
		if !ok {
			t.Fatalf("row %q names response %q the upstream never served", id, row.ResponseID)
		}
		if row.Input == 0 || row.Output == 0 {
			t.Fatalf("row %s has no tokens: %+v", id, row)
		}
		checkUsage(t, row, s.Usage)
		if row.UserID != demoUser || row.AccountID != demoAccount || row.Status != "completed" || row.Stream != (id != jsonReq) {
			t.Fatalf("row = %+v", row)
		}
		// The demo account has an upstream WebSocket: no HTTP bridge.
		if ws := id == wsReq; (row.Transport == "ws") != ws || s.WebSocket != ws {
			t.Fatalf("row %+v, served over WebSocket %v", row, s.WebSocket)
		}
	}
}

// `relayd` with no -config: the demo starts, prints its intro, serves the
// printed command, and a signal ends it with exit code 0 after the usage
// row is written.
func TestRunDemoMode(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "demo.db")
	stdout, stderr := newLogBuffer(), newLogBuffer()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", dbPath}, stdout, stderr) }()

	text := stdout.waitFor(t, "Press Ctrl-C to stop.")
	cmds := parseCurls(t, text)
	if len(cmds) != 4 {
		t.Fatalf("intro:\n%s", text)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, b := cmds[0].do(t, client)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	reqID := resp.Header.Get("X-Relay-Request-Id")
	client.CloseIdleConnections()

	stop()
	if code := <-exit; code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	rows := readRows(t, dbPath)
	if row, ok := rows[reqID]; !ok || row.Status != "completed" || row.UserID != demoUser {
		t.Fatalf("rows = %+v", rows)
	}
	logs := stderr.String()
	for _, want := range []string{"relayd: listening", "relayd: shutting down", "relayd: stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "rk-demo-") || strings.Contains(logs, "sk-demo-") {
		t.Errorf("a demo key reached the log:\n%s", logs)
	}
}
