package main

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/internal/testservice"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// waitUntil polls cond until it holds, failing the test after 20 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
}

// readEvents reads SSE events from r until n have arrived, and returns
// their types.
func readEvents(t *testing.T, r *bufio.Reader, n int) []string {
	t.Helper()
	var types []string
	for len(types) < n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", len(types), err)
		}
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: "); ok {
			types = append(types, gjson.Get(data, "type").String())
		}
	}
	return types
}

// usageWant is what the row of a turn says, and how the upstream ended it.
type usageWant struct {
	status, transport string
	stream            bool
	upstream          string // the fake's Served.Status
}

// usageRun performs a turn with st as the upstream's script and returns
// the relay request id when the client learns one.
type usageRun func(t *testing.T, e *env, st relaytest.Step) string

// A turn of each kind leaves exactly one row whose tokens are the ones the
// upstream reported, also when the turn ended incomplete or failed after
// output, or its client left before the end (relayd drains the upstream to
// learn them).
func TestUsageRowsMatchUpstream(t *testing.T) {
	post := func(stream bool, terminal string) usageRun {
		return func(t *testing.T, e *env, st relaytest.Step) string {
			e.up.Script("a1", st)
			body := `{"model":"gpt-5","input":"count me"}`
			if stream {
				body = `{"model":"gpt-5","input":"count me","stream":true}`
			}
			resp, b := e.post(body, "Authorization", "Bearer "+keyAlice)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			last := gjson.GetBytes(b, "status").String()
			if stream {
				events, err := relaytest.ReadSSE(bytes.NewReader(b))
				if err != nil || len(events) == 0 {
					t.Fatalf("events %v, %v", events, err)
				}
				last = events[len(events)-1].Type
			}
			if last != terminal {
				t.Fatalf("turn ended with %q, want %q", last, terminal)
			}
			return resp.Header.Get("X-Relay-Request-Id")
		}
	}
	ws := func(terminal string) usageRun {
		return func(t *testing.T, e *env, st relaytest.Step) string {
			e.up.Script("a1", st)
			events := wsTurn(t, e.connect(keyAlice), wsCreate("count me"))
			if last := events[len(events)-1].Type; last != terminal {
				t.Fatalf("turn ended with %q, want %q", last, terminal)
			}
			return ""
		}
	}
	// The client reads six events and hangs up; the upstream goes on only
	// once relayd has seen it leave.
	streamGone := func(t *testing.T, e *env, st relaytest.Step) string {
		resume := make(chan struct{})
		st.After, st.Hold = 6, resume
		e.up.Script("a1", st)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+"/v1/responses",
			strings.NewReader(`{"model":"gpt-5","input":"leave early","stream":true}`))
		req.Header.Set("Authorization", "Bearer "+keyAlice)
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readEvents(t, bufio.NewReader(resp.Body), 6)
		cancel()
		resp.Body.Close()
		waitUntil(t, "relayd to see the client leave", func() bool { return e.gone.Load() == 1 })
		close(resume)
		return resp.Header.Get("X-Relay-Request-Id")
	}
	// The client of a JSON turn gives up while the upstream thinks.
	jsonGone := func(t *testing.T, e *env, st relaytest.Step) string {
		hold := make(chan struct{})
		st.Hold = hold
		e.up.Script("a1", st)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+"/v1/responses",
				strings.NewReader(`{"model":"gpt-5","input":"leave early"}`))
			req.Header.Set("Authorization", "Bearer "+keyAlice)
			if resp, err := e.ts.Client().Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("the request was answered: %d", resp.StatusCode)
			}
		}()
		if err := e.up.Wait(ctx, func() bool { return e.up.InFlight("a1") == 1 }); err != nil {
			t.Fatal(err)
		}
		cancel()
		<-done
		waitUntil(t, "relayd to see the client leave", func() bool { return e.gone.Load() == 1 })
		close(hold)
		return ""
	}
	// A WebSocket client closes its connection mid-turn. Close completes
	// the closing handshake, so relayd has seen it before the upstream
	// goes on.
	wsGone := func(t *testing.T, e *env, st relaytest.Step) string {
		resume := make(chan struct{})
		st.After, st.Hold = 6, resume
		e.up.Script("a1", st)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.ts.URL, "http")+"/v1/responses", &websocket.DialOptions{
			HTTPClient: e.ts.Client(),
			HTTPHeader: http.Header{"Authorization": {"Bearer " + keyAlice}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5","input":"leave early"}`)); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if _, _, err := c.Read(ctx); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatal(err)
		}
		close(resume)
		return ""
	}

	cases := []struct {
		name      string
		websocket bool // the account speaks the WebSocket mode upstream
		step      relaytest.Step
		run       usageRun
		want      usageWant
	}{
		{"json", false, relaytest.Step{}, post(false, "completed"),
			usageWant{"completed", "http", false, "completed"}},
		{"stream", false, relaytest.Step{Deltas: 9}, post(true, "response.completed"),
			usageWant{"completed", "http", true, "completed"}},
		{"websocket", true, relaytest.Step{}, ws("response.completed"),
			usageWant{"completed", "ws", true, "completed"}},
		{"websocket bridged", false, relaytest.Step{}, ws("response.completed"),
			usageWant{"completed", "ws", true, "completed"}},
		{"json incomplete", false, relaytest.Step{End: "incomplete max_output_tokens"}, post(false, "incomplete"),
			usageWant{"incomplete", "http", false, "incomplete"}},
		{"stream incomplete", false, relaytest.Step{End: "incomplete max_output_tokens"}, post(true, "response.incomplete"),
			usageWant{"incomplete", "http", true, "incomplete"}},
		{"websocket incomplete", true, relaytest.Step{End: "incomplete max_output_tokens"}, ws("response.incomplete"),
			usageWant{"incomplete", "ws", true, "incomplete"}},
		{"websocket bridged incomplete", false, relaytest.Step{End: "incomplete content_filter"}, ws("response.incomplete"),
			usageWant{"incomplete", "ws", true, "incomplete"}},
		{"stream failed after output", false, relaytest.Step{End: "failed server_error"}, post(true, "response.failed"),
			usageWant{"failed", "http", true, "failed"}},
		{"stream client gone", false, relaytest.Step{}, streamGone,
			usageWant{"client_gone", "http", true, "completed"}},
		{"json client gone", false, relaytest.Step{}, jsonGone,
			usageWant{"client_gone", "http", false, "completed"}},
		{"websocket client gone", true, relaytest.Step{}, wsGone,
			usageWant{"client_gone", "ws", true, "completed"}},
		{"websocket bridged client gone", false, relaytest.Step{}, wsGone,
			usageWant{"client_gone", "ws", true, "completed"}},
	}
	// Through the in-memory queue and through the spool, into each
	// database.
	eachDB(t, func(t *testing.T, newDB func(testing.TB) usageDB) {
		for _, spool := range []bool{false, true} {
			t.Run(map[bool]string{false: "queue", true: "spool"}[spool], func(t *testing.T) {
				for i, c := range cases {
					t.Run(c.name, func(t *testing.T) {
						db := newDB(t)
						e := newEnv(t, []string{"a1"}, func(cfg *Config) {
							cfg.Accounts[0].WebSocket = c.websocket
							cfg.Usage = UsageConfig{Driver: db.driver, DSN: db.dsn}
							if spool {
								cfg.Usage.Spool = t.TempDir()
							}
						})
						if (e.srv.spool != nil) != spool {
							t.Fatalf("spool %v, want %v", e.srv.spool != nil, spool)
						}
						checkUsageCase(t, e, i, c.step, c.run, c.want)
					})
				}
			})
		}
	})
}

// checkUsageCase runs case number i and checks that it left exactly one
// row, carrying the tokens the upstream reported.
func checkUsageCase(t *testing.T, e *env, i int, step relaytest.Step, run usageRun, want usageWant) {
	t.Helper()
	// Counts no other case reports, cached and reasoning tokens included.
	usage := relaytest.Usage{Input: 1000 + int64(i)*11, Cached: 512 + int64(i), Output: 40 + int64(i)*3, Reasoning: 8 + int64(i)}
	step.Usage = &usage
	reqID := run(t, e, step)

	rows := e.rows()
	var answered []relaytest.Served
	for _, s := range e.up.Served() {
		if s.ResponseID != "" {
			answered = append(answered, s)
		}
	}
	if len(rows) != 1 || len(answered) != 1 {
		t.Fatalf("rows = %d, upstream responses = %d; want 1 and 1", len(rows), len(answered))
	}
	s := answered[0]
	if s.Status != want.upstream || s.Usage != usage {
		t.Fatalf("upstream served %+v; the script did not apply", s)
	}
	for id, row := range rows {
		if reqID != "" && id != reqID {
			t.Errorf("row %s, but the client was told %s", id, reqID)
		}
		if row.ResponseID != s.ResponseID {
			t.Errorf("row response %q, upstream %q", row.ResponseID, s.ResponseID)
		}
		checkUsage(t, row, s.Usage)
		if row.Status != want.status || row.Transport != want.transport || row.Stream != want.stream {
			t.Errorf("row status %q transport %q stream %v; want %+v", row.Status, row.Transport, row.Stream, want)
		}
		if row.AccountID != "a1" || row.UserID != "alice" || row.Model != "gpt-5" || row.UpstreamModel != "gpt-5" ||
			row.Attempts != 1 || !row.FirstTokenMS.Valid || row.CreatedAt == "" {
			t.Errorf("row = %+v", row)
		}
	}
}

// With the database down, turns still end (their records are synced to the
// spool), a shutdown keeps the undelivered records in the spool instead of
// failing, and the next start delivers them.
func TestSpoolOutlivesADatabaseOutage(t *testing.T) {
	db, spool := sqliteDB(t), t.TempDir()
	tweak := func(c *Config) { c.Usage = UsageConfig{Driver: db.driver, DSN: db.dsn, Spool: spool} }
	e := newEnv(t, []string{"a1"}, tweak)
	lock := lockDB(t, db)
	ids := map[string]bool{}
	for range 3 {
		resp, b := e.post(`{"model":"gpt-5","input":"while the database is down"}`, "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		ids[resp.Header.Get("X-Relay-Request-Id")] = true
	}
	closed := make(chan error, 1)
	e.finishOnce.Do(func() {
		e.ts.Close()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			closed <- e.srv.Close(ctx)
		}()
	})
	e.logs.waitFor(t, "relayd: usage spool not drained")
	if n := lock.count(t); n != 0 {
		t.Fatalf("%d rows written through the lock", n)
	}
	// The database is back while the sink finishes: a record it writes
	// now stays unacknowledged in the spool and comes again on the next
	// start, which must not count it twice.
	lock.release(t)
	if err := <-closed; err != nil {
		t.Fatalf("close with records left in the spool: %v", err)
	}
	if segs, _ := filepath.Glob(filepath.Join(spool, "*.seg")); len(segs) == 0 {
		t.Fatal("no spool segment kept")
	}

	rows := newEnv(t, []string{"a1"}, tweak).rows()
	if len(rows) != len(ids) {
		t.Fatalf("rows = %d, want %d", len(rows), len(ids))
	}
	for id := range rows {
		if !ids[id] {
			t.Fatalf("row %s is none of the turns %v", id, ids)
		}
	}
}

// A PostgreSQL server that does not answer stops relayd at start, with an
// error that names the server but not the password.
func TestPostgresUnreachableAtStart(t *testing.T) {
	addr := testservice.ClosedAddr(t)
	err := startFails(t, "its database", func(cfg *Config) {
		cfg.Usage = UsageConfig{Driver: "postgres", DSN: "postgres://relayd:pw-secret-8@" + addr + "/billing?connect_timeout=5"}
	})
	if msg := err.Error(); !strings.Contains(msg, "usage log (postgres relayd@"+addr+"/billing)") || strings.Contains(msg, "pw-secret") {
		t.Fatalf("error = %v", err)
	}
}
