package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// The demo's fixed names.
const (
	demoAccount = "demo"
	// demoChat is an account that speaks Chat Completions (the same fake),
	// preferred for demoChatModel: the demo shows both kinds of upstream.
	demoChat      = "demo-chat"
	demoChatModel = "gpt-5-chat"
	demoUser      = "demo-user"
	demoModel     = "gpt-5"
)

// demo is the fake upstream of demo mode and the config that points at it.
type demo struct {
	cfg      Config
	upstream *relaytest.Upstream
	hs       *http.Server
	served   chan struct{}
	apiKey   string
	admin    string
}

// demoDBPath is where the demo keeps its usage log unless -db says
// otherwise: the system temp directory, so a demo run from a source tree
// leaves no file in it.
func demoDBPath() string { return filepath.Join(os.TempDir(), "relayd-demo-usage.db") }

// startDemo serves a relaytest fake upstream on a loopback port and returns
// a config with one account on it and one fresh client key. Both keys are
// random per run.
func startDemo(dbPath string) (*demo, error) {
	if dbPath == "" {
		dbPath = demoDBPath()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo upstream: %w", err)
	}
	upstreamKey := "sk-demo-" + randomHex(16)
	d := &demo{
		upstream: relaytest.New(),
		served:   make(chan struct{}),
		apiKey:   "rk-demo-" + randomHex(16),
		admin:    "admin-demo-" + randomHex(16),
	}
	// The fake checks the upstream key, so the demo exercises the relay's
	// credential handling end to end.
	d.upstream.SetKey(demoAccount, upstreamKey)
	d.upstream.SetKey(demoChat, upstreamKey)
	// Keep no request log: a long-running demo would grow it forever.
	d.upstream.NoLog = true
	d.hs = &http.Server{Handler: d.upstream, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(d.served)
		d.hs.Serve(ln)
	}()
	d.cfg = Config{
		Listen: defaultListen,
		Accounts: []AccountConfig{{
			ID:          demoAccount,
			Group:       defaultGroup,
			BaseURL:     "http://" + ln.Addr().String() + "/" + demoAccount + "/v1",
			APIKey:      upstreamKey,
			Concurrency: 4,
			Weight:      1,
			// The fake speaks the WebSocket mode, so WebSocket clients get
			// a pinned upstream socket rather than the HTTP bridge.
			WebSocket: true,
			// What GET /v1/models lists; the fake answers any model, and so
			// does the demo.
			Models: []string{"gpt-5", "gpt-5-mini", "*"}, // "*": any other name too, unlisted
		}, {
			ID:          demoChat,
			Group:       defaultGroup,
			BaseURL:     "http://" + ln.Addr().String() + "/" + demoChat + "/v1",
			APIKey:      upstreamKey,
			Concurrency: 4,
			Weight:      1,
			Priority:    -1, // before the demo account for its model
			WireAPI:     "chat",
			Models:      []string{demoChatModel},
		}},
		APIKeys: []APIKeyConfig{{
			Key:         d.apiKey,
			UserID:      demoUser,
			Group:       defaultGroup,
			Concurrency: 2,
		}},
		Usage:      UsageConfig{Driver: defaultDriver, DSN: dbPath},
		AdminToken: d.admin,
	}
	return d, nil
}

// printIntro tells the user what runs and how to call it.
func (d *demo) printIntro(w io.Writer, addr string) {
	base := "http://" + addr
	db := d.cfg.Usage.DSN
	fmt.Fprintf(w, `relayd demo: a fake Responses upstream runs inside this process; no request leaves this machine.

  relay:     %[1]s/v1/responses
  upstream:  account %[2]q at %[3]s (relaytest fake, answers "Echo: <your input>")
  API key:   %[4]s (user %[5]q, at most 2 turns at once)
  chat:      account %[10]q speaks Chat Completions: "model":"%[11]s" goes there, translated both ways
  usage log: %[6]s (SQLite, table usage_records)

A JSON request:

  curl -sS %[1]s/v1/responses \
    -H 'Authorization: Bearer %[4]s' \
    -H 'Content-Type: application/json' \
    -d '{"model":"%[7]s","input":"Hello, relay!"}'

The same request streamed as server-sent events:

  curl -sS -N %[1]s/v1/responses \
    -H 'Authorization: Bearer %[4]s' \
    -H 'Content-Type: application/json' \
    -d '{"model":"%[7]s","input":"Hello, relay!","stream":true}'

The WebSocket mode on the same path, with the same bearer key; each turn is
one message like {"type":"response.create","model":"%[7]s","input":"Hello, relay!"}:

  %[8]s/v1/responses

  openai-go: client.Beta.Responses.Connect(ctx, openai.BetaResponseConnectionOptions{})
             on a client made with option.WithBaseURL("%[1]s/v1")
  Codex CLI: a model provider with base_url = "%[1]s/v1" and supports_websockets = true

Usage records (written a moment after each turn):

  sqlite3 %[6]s 'SELECT created_at, transport, model, status, input_tokens, output_tokens, total_tokens FROM usage_records ORDER BY created_at DESC LIMIT 5'

Operator views (admin token %[9]s):

  curl -sS %[1]s/debug/accounts -H 'Authorization: Bearer %[9]s'
  curl -sS %[1]s/metrics -H 'Authorization: Bearer %[9]s'

Press Ctrl-C to stop.

`, base, demoAccount, d.cfg.Accounts[0].BaseURL, d.apiKey, demoUser, db, demoModel, "ws://"+addr, d.admin, demoChat, demoChatModel)
}

// Close stops the fake upstream. http.Server.Close does not cover upgraded
// connections: give the fake a moment to finish the WebSockets the relay
// has closed.
func (d *demo) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.upstream.Wait(ctx, func() bool { return d.upstream.WSConns(demoAccount) == 0 })
	d.hs.Close()
	<-d.served
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b)
}
