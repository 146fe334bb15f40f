package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// childEnv makes the test binary run relayd's main instead of the tests
// (see TestMain), so that a test can kill a real relayd process.
const childEnv = "RELAYD_TEST_CHILD"

// child is a relayd process running the test binary.
type child struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	addr   string
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

var listeningRE = regexp.MustCompile(`msg="relayd: listening" addr=(\S+)`)

// startChild runs relayd with args and waits until it listens. Cleanup
// kills it if the test has not ended it.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{logs: newLogBuffer(), exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	c.cmd.Stdout = c.logs
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			lines := strings.Split(c.logs.String(), "\n")
			t.Logf("relayd output (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	m := listeningRE.FindStringSubmatch(c.logs.waitFor(t, "relayd: listening"))
	if m == nil {
		t.Fatalf("no address in the listening line:\n%s", c.logs)
	}
	c.addr = m[1]
	return c
}

// kill ends the process with SIGKILL: no deferred call, no flush, no
// shutdown.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.exited
}

// stop sends SIGTERM and returns the exit code.
func (c *child) stop(t *testing.T) int {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("relayd did not stop:\n%s", c.logs)
	}
	return c.cmd.ProcessState.ExitCode()
}

// dbLock keeps relayd from writing usage rows, as a database that stopped
// answering would, while the test can still count them.
type dbLock struct {
	db   *sql.DB
	conn *sql.Conn
}

func lockDB(t *testing.T, d usageDB) *dbLock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var l dbLock
	stmt := "LOCK TABLE usage_records IN EXCLUSIVE MODE" // readers pass, INSERT waits
	if d.driver == sqlusage.DriverSQLite {
		// Wait for a write of relayd's in progress, then take the write
		// lock: its inserts wait for the busy timeout and fail.
		l.db = usageDB{d.driver, "file:" + d.dsn + "?_pragma=busy_timeout(10000)"}.open(t)
		stmt = "SELECT 1"
	} else {
		l.db = d.open(t)
	}
	var err error
	if l.conn, err = l.db.Conn(ctx); err == nil {
		begin := "BEGIN"
		if d.driver == sqlusage.DriverSQLite {
			begin = "BEGIN IMMEDIATE"
		}
		if _, err = l.conn.ExecContext(ctx, begin); err == nil {
			_, err = l.conn.ExecContext(ctx, stmt)
		}
	}
	if err != nil {
		l.db.Close()
		t.Fatalf("locking the usage table: %v", err)
	}
	return &l
}

func (l *dbLock) count(t *testing.T) int {
	t.Helper()
	var n int
	if err := l.conn.QueryRowContext(context.Background(), `SELECT count(*) FROM usage_records`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (l *dbLock) release(t *testing.T) {
	t.Helper()
	if _, err := l.conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Error(err)
	}
	l.conn.Close()
	l.db.Close()
}

// traffic is clients sending streaming turns to relayd one after another.
type traffic struct {
	client *http.Client
	url    string
	ctx    context.Context
	cancel context.CancelFunc
	killed atomic.Bool // errors are expected from then on
	wg     sync.WaitGroup

	mu        sync.Mutex
	completed map[string]bool // response ids of turns whose stream ended at response.completed
	errs      []error         // before the kill
}

func startTraffic(addr string, clients int) *traffic {
	tr := newTraffic(addr)
	tr.client.Transport.(*http.Transport).MaxIdleConnsPerHost = clients
	for c := range clients {
		tr.wg.Go(func() {
			for i := 0; ; i++ {
				if err := tr.turn(fmt.Sprintf("client %d turn %d", c, i)); err != nil {
					if !tr.killed.Load() {
						tr.mu.Lock()
						tr.errs = append(tr.errs, err)
						tr.mu.Unlock()
					}
					return
				}
			}
		})
	}
	return tr
}

func newTraffic(addr string) *traffic {
	tr := &traffic{
		client:    &http.Client{Transport: &http.Transport{}},
		url:       "http://" + addr + "/v1/responses",
		completed: map[string]bool{},
	}
	tr.ctx, tr.cancel = context.WithCancel(context.Background())
	return tr
}

// close ends the turns still running and waits for the clients.
func (tr *traffic) close() {
	tr.killed.Store(true)
	tr.cancel()
	tr.wg.Wait()
	tr.client.CloseIdleConnections()
}

// turn sends one streaming turn and reads it to the end of the body.
func (tr *traffic) turn(input string) error {
	body, _ := json.Marshal(map[string]any{"model": "gpt-5", "input": input, "stream": true})
	req, _ := http.NewRequestWithContext(tr.ctx, http.MethodPost, tr.url, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	resp, err := tr.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	events, err := relaytest.ReadSSE(strings.NewReader(string(b)))
	if err != nil || len(events) == 0 || events[len(events)-1].Type != "response.completed" {
		return fmt.Errorf("stream did not complete (%v): %s", err, b)
	}
	tr.mu.Lock()
	tr.completed[gjson.GetBytes(events[len(events)-1].Data, "response.id").String()] = true
	tr.mu.Unlock()
	return nil
}

// failures are the errors of turns before the kill.
func (tr *traffic) failures() []error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.errs)
}

func (tr *traffic) completedCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.completed)
}

// upstreamCompleted returns the turns the fake completed, by response id.
func upstreamCompleted(up *relaytest.Server) map[string]relaytest.Served {
	m := map[string]relaytest.Served{}
	for _, s := range up.Served() {
		if s.Status == "completed" && s.ResponseID != "" {
			m[s.ResponseID] = s
		}
	}
	return m
}

// relayd with a spool is killed with SIGKILL under streaming traffic and
// started again on the same spool and database: every turn the upstream
// completed then has exactly one row, with its tokens.
//
// The kill comes while turns are mid-stream, while the database refuses
// writes so that the spool holds records it has not delivered, but not
// while a turn lies between its terminal event and the sync of its record.
// A record is durable once Spool.Record returned, which is before relayd
// ends the client's stream; a turn killed before that had not finished,
// and no log could keep it. So the fake answers the first turns in full
// and pauses every later one mid-stream, and the kill waits until the
// clients have received the end of every completed turn.
func TestCrashKeepsEveryCompletedTurn(t *testing.T) {
	eachDB(t, func(t *testing.T, newDB func(testing.TB) usageDB) {
		crashAndRestart(t, newDB(t))
	})
}

func crashAndRestart(t *testing.T, db usageDB) {
	const (
		clients   = 8
		completed = 400 // turns answered in full before the kill
	)
	up := relaytest.NewServer()
	defer up.Close()
	up.SetKey("a1", upstreamKey("a1"))
	// The second half of the completed turns waits at the fake until the
	// database is locked: however fast relayd is, their records can then
	// only reach the spool.
	gate := make(chan struct{})
	var openGate sync.Once
	defer openGate.Do(func() { close(gate) })
	steps := make([]relaytest.Step, completed)
	for i := completed / 2; i < completed; i++ {
		steps[i] = relaytest.Step{Hold: gate}
	}
	up.Script("a1", steps...)
	paused := make(chan struct{}) // never closed: the turns end with relayd
	up.SetDefault("a1", relaytest.Step{After: 4, Hold: paused})

	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	doc, _ := json.Marshal(map[string]any{
		"listen":   "127.0.0.1:0",
		"accounts": []map[string]any{{"id": "a1", "base_url": up.BaseURL("a1"), "api_key": upstreamKey("a1")}},
		"api_keys": []map[string]any{{"key": keyAlice, "user_id": "alice"}},
		"usage":    map[string]any{"driver": db.driver, "dsn": db.dsn, "spool": spool},
	})
	config := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(config, doc, 0o600); err != nil {
		t.Fatal(err)
	}

	first := startChild(t, "-config", config)
	tr := startTraffic(first.addr, clients)
	defer tr.close()

	// Half way, the database stops taking rows; turns go on, their
	// records wait in the spool.
	waitUntil(t, "half of the turns", func() bool {
		return len(upstreamCompleted(up)) >= completed/2 || len(tr.failures()) > 0
	})
	lock := lockDB(t, db)
	locked := true
	defer func() {
		if locked {
			lock.release(t)
		}
	}()
	openGate.Do(func() { close(gate) })

	// Every client is now in a turn paused mid-stream, and has the end
	// of each completed one.
	waitUntil(t, "every client in a paused turn", func() bool {
		return up.InFlight("a1") == clients && len(upstreamCompleted(up)) == completed && tr.completedCount() == completed ||
			len(tr.failures()) > 0
	})
	if errs := tr.failures(); len(errs) > 0 {
		t.Fatalf("turns failed before the kill: %v", errs)
	}
	rowsAtKill := lock.count(t)
	tr.killed.Store(true)
	first.kill(t)
	tr.wg.Wait()
	waitUntil(t, "the fake to see relayd's connections end", func() bool { return up.InFlight("a1") == 0 })
	lock.release(t)
	locked = false

	served := upstreamCompleted(up)
	if len(served) != completed || rowsAtKill >= completed {
		t.Fatalf("upstream completed %d turns, %d rows before the kill; the test wants %d and fewer rows",
			len(served), rowsAtKill, completed)
	}
	for id := range tr.completed {
		if _, ok := served[id]; !ok {
			t.Fatalf("client completed %s, which the upstream never did", id)
		}
	}

	// The restart delivers what the spool kept.
	up.SetDefault("a1", relaytest.Step{})
	second := startChild(t, "-config", config)
	replayed := 0
	if m := regexp.MustCompile(`left by an earlier run" dir=\S+ records=(\d+)`).FindStringSubmatch(second.logs.String()); m != nil {
		replayed, _ = strconv.Atoi(m[1])
	}
	if replayed < completed-rowsAtKill {
		t.Fatalf("the restart replays %d records; %d rows were missing", replayed, completed-rowsAtKill)
	}
	// And it serves.
	tr2 := newTraffic(second.addr)
	defer tr2.close()
	if err := tr2.turn("after the restart"); err != nil {
		t.Fatal(err)
	}
	if code := second.stop(t); code != 0 {
		t.Fatalf("relayd exited %d", code)
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	if len(segs) != 0 {
		t.Errorf("spool segments left after a clean stop: %v", segs)
	}

	rows := db.rows(t)
	served = upstreamCompleted(up)
	if len(rows) != completed+1 || len(served) != completed+1 {
		t.Fatalf("rows = %d, upstream completed %d turns; want %d and %d", len(rows), len(served), completed+1, completed+1)
	}
	byResponse := map[string]int{}
	for _, row := range rows {
		byResponse[row.ResponseID]++
		s, ok := served[row.ResponseID]
		if !ok || row.Status != "completed" || row.Transport != "http" || !row.Stream {
			t.Fatalf("row %+v (upstream served %v)", row, ok)
		}
		checkUsage(t, row, s.Usage)
	}
	for id := range served {
		if byResponse[id] != 1 {
			t.Errorf("response %s has %d rows", id, byResponse[id])
		}
	}
	t.Logf("%s: %d turns completed before SIGKILL (%d in flight), %d rows then; %d records replayed on restart; %d rows after (1 turn after the restart)",
		db.driver, completed, clients, rowsAtKill, replayed, len(rows))
}
