package main

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/internal/relaytestenv"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main() // a relayd process for the crash test; exits
	}
	goleak.VerifyTestMain(m)
}

// Keys used across the tests. They are long and distinctive so that a leak
// into a log line or a response is found by a plain substring search.
const (
	keyAlice = "rk-test-alice-7d3f0c9b8a61e2f4"
	keyBob   = "rk-test-bob-51a9e0d7c3b2f864"
)

func upstreamKey(account string) string { return "sk-upstream-" + account + "-9f8e7d6c5b4a3921" }

// env is relayd's server over httptest in front of a relaytest fake with
// one upstream account per name, as a config file would describe it.
type env struct {
	t    *testing.T
	up   *relaytest.Server
	cfg  Config
	srv  *server
	ts   *httptest.Server
	logs *logBuffer
	db   usageDB
	// gone counts requests whose client left while relayd still served
	// them, so that tests can wait for relayd to have seen it.
	gone atomic.Int64

	finishOnce sync.Once
}

// newEnv builds the config (alice in group "default" with every account,
// bob likewise), lets tweak change it, and starts the server. Cleanup
// closes everything and checks that no slot is left.
func newEnv(t *testing.T, accounts []string, tweak func(*Config), before ...func(*server)) *env {
	t.Helper()
	return newEnvOn(t, relaytest.NewServer(), accounts, tweak, before...)
}

// newEnvOn is newEnv in front of an existing fake, which several envs may
// share (as relayd instances share upstream accounts); each env closes it
// at cleanup, which is harmless once closed.
func newEnvOn(t *testing.T, up *relaytest.Server, accounts []string, tweak func(*Config), before ...func(*server)) *env {
	t.Helper()
	e := &env{t: t, up: up, logs: newLogBuffer()}
	e.cfg = Config{
		APIKeys: []APIKeyConfig{
			{Key: keyAlice, UserID: "alice", Concurrency: 4},
			{Key: keyBob, UserID: "bob"},
		},
		Usage: UsageConfig{DSN: filepath.Join(t.TempDir(), "usage.db")},
	}
	for _, a := range accounts {
		e.up.SetKey(a, upstreamKey(a))
		e.cfg.Accounts = append(e.cfg.Accounts, AccountConfig{ID: a, BaseURL: e.up.BaseURL(a), APIKey: upstreamKey(a)})
	}
	if tweak != nil {
		tweak(&e.cfg)
	}
	// The same path as a file: defaults, then validation.
	e.cfg.applyDefaults()
	if err := e.cfg.validate(); err != nil {
		e.up.Close()
		t.Fatalf("test config invalid: %v", err)
	}
	e.db = usageDB{e.cfg.Usage.Driver, e.cfg.Usage.DSN}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := newServer(e.cfg, logger)
	if err != nil {
		e.up.Close()
		t.Fatal(err)
	}
	e.srv = srv
	for _, f := range before {
		f(srv)
	}
	h := srv.Handler()
	e.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The request's context also ends when ServeHTTP returns: stop
		// watching before that.
		stop := context.AfterFunc(r.Context(), func() { e.gone.Add(1) })
		h.ServeHTTP(w, r)
		stop()
	}))
	t.Cleanup(func() {
		e.finish()
		e.up.Close()
		for _, a := range e.cfg.Accounts {
			if n := relaytestenv.AccountInFlight(e.srv.sched, a.ID); n != 0 {
				t.Errorf("account %s: %d slots still held", a.ID, n)
			}
		}
		for _, k := range e.cfg.APIKeys {
			if n := e.srv.userSlots.InFlight("user:" + k.UserID); n != 0 {
				t.Errorf("user %s: %d slots still held", k.UserID, n)
			}
		}
	})
	return e
}

// finish stops serving, waits for every handler, drains the usage queue
// (or spool) into the database and closes it, so that the rows can be read.
func (e *env) finish() {
	e.finishOnce.Do(func() {
		e.ts.Close() // waits for the handlers, so every record is queued
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.srv.Close(ctx); err != nil {
			e.t.Errorf("server close: %v", err)
		}
	})
}

// post sends a raw request to relayd and returns the response with its
// body read.
func (e *env) post(body string, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.ts.URL+"/v1/responses", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// usageRow is one row of usage_records.
type usageRow struct {
	RequestID, ResponseID, UserID, APIKeyID, GroupID, AccountID string
	Model, UpstreamModel, Transport, Status, CreatedAt          string
	Stream                                                      bool
	Turn                                                        int64
	Input, Cached, Output, Reasoning, Total                     int64
	Attempts, DurationMS                                        int64
	FirstTokenMS                                                sql.NullInt64
	CostMicros                                                  int64
}

// rows finishes the env and reads every usage row, keyed by request id.
func (e *env) rows() map[string]usageRow {
	e.t.Helper()
	e.finish()
	return e.db.rows(e.t)
}

// readRows reads the usage rows of a SQLite file.
func readRows(t *testing.T, path string) map[string]usageRow {
	t.Helper()
	return usageDB{sqlusage.DriverSQLite, path}.rows(t)
}

// servedByResponse indexes the fake's answers by response id.
func servedByResponse(up *relaytest.Upstream) map[string]relaytest.Served {
	m := map[string]relaytest.Served{}
	for _, s := range up.Served() {
		if s.ResponseID != "" {
			m[s.ResponseID] = s
		}
	}
	return m
}

// checkUsage asserts that a row carries exactly the tokens the fake sent.
func checkUsage(t *testing.T, row usageRow, want relaytest.Usage) {
	t.Helper()
	got := relaytest.Usage{Input: row.Input, Cached: row.Cached, Output: row.Output, Reasoning: row.Reasoning}
	if got != want || row.Total != (want.Input+want.Output) {
		t.Errorf("row %s tokens = %+v total %d, upstream sent %+v total %d", row.RequestID, got, row.Total, want, (want.Input + want.Output))
	}
}

// logBuffer collects log output and lets a test wait for a line.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the output contains s.
func (b *logBuffer) waitFor(t *testing.T, s string) string {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		out, ch := b.buf.String(), b.changed
		b.mu.Unlock()
		if strings.Contains(out, s) {
			return out
		}
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %q in output:\n%s", s, out)
		}
	}
}

// startFails builds relayd on one upstream account and alice's key, with
// the config changed by tweak, and returns the error that stopped it at
// start. It fails the test if relayd started: what names the dependency
// it should have found missing.
func startFails(t *testing.T, what string, tweak func(*Config)) error {
	t.Helper()
	up := relaytest.NewServer()
	defer up.Close()
	cfg := Config{
		Accounts: []AccountConfig{{ID: "a1", BaseURL: up.BaseURL("a1"), APIKey: upstreamKey("a1")}},
		APIKeys:  []APIKeyConfig{{Key: keyAlice, UserID: "alice"}},
	}
	tweak(&cfg)
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("started without " + what)
	}
	return err
}
