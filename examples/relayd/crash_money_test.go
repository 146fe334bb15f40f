package main

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
	"github.com/relaykit/responsesrelay/relay/relaytest"
)

// refuseRows makes the usage table refuse every insert, as a database
// whose table is broken would, while the ledger beside it goes on
// working; the returned function lifts it.
func refuseRows(t *testing.T, d usageDB) (lift func()) {
	t.Helper()
	stmts := []string{`CREATE TRIGGER relayd_test_refuse BEFORE INSERT ON usage_records
		BEGIN SELECT RAISE(ABORT, 'usage rows refused by the test'); END`}
	undo := `DROP TRIGGER relayd_test_refuse`
	db := d
	if d.driver == sqlusage.DriverSQLite {
		db.dsn = "file:" + d.dsn + "?_pragma=busy_timeout(10000)" // relayd may be writing
	} else {
		stmts = []string{
			`CREATE FUNCTION relayd_test_refuse() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN RAISE EXCEPTION 'usage rows refused by the test'; END $$`,
			`CREATE TRIGGER relayd_test_refuse BEFORE INSERT ON usage_records FOR EACH ROW EXECUTE FUNCTION relayd_test_refuse()`,
		}
		undo = `DROP TRIGGER relayd_test_refuse ON usage_records`
	}
	conn := db.open(t)
	for _, s := range stmts {
		if _, err := conn.Exec(s); err != nil {
			conn.Close()
			t.Fatalf("%s: %v", s, err)
		}
	}
	return func() {
		defer conn.Close()
		if _, err := conn.Exec(undo); err != nil {
			t.Fatal(err)
		}
	}
}

// childKey reads key's entry of a relayd process's /debug/keys.
func childKey(t *testing.T, addr, key string) keyView {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/debug/keys", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v keysView
	if err := json.Unmarshal(b, &v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/debug/keys: %d %s", resp.StatusCode, b)
	}
	id := keyID(sha256.Sum256([]byte(key)))
	for _, k := range v.Keys {
		if k.APIKeyID == id {
			return k
		}
	}
	t.Fatalf("no key %s in %s", id, b)
	return keyView{}
}

// Holds always end, and no turn is debited twice: relayd with a spool and
// a budget is killed with SIGKILL while turns are paused mid-stream (each
// holding money) and the usage table refuses rows, so that the records of
// the completed turns, settled already, wait in the spool; the spool's
// retries settle them again. The next start releases the holds of the
// killed turns before it serves, and its replays settle each record once
// more: the spend stays what it was and equals the rows' costs.
func TestCrashReleasesHoldsAndSettlesOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, newDB func(testing.TB) usageDB) {
		crashMoney(t, newDB(t))
	})
}

func crashMoney(t *testing.T, db usageDB) {
	const (
		clients   = 4
		completed = 20
	)
	up := relaytest.NewServer()
	defer up.Close()
	up.SetKey("a1", upstreamKey("a1"))
	up.Script("a1", make([]relaytest.Step, completed)...)
	paused := make(chan struct{})
	var unpause sync.Once
	defer unpause.Do(func() { close(paused) })
	up.SetDefault("a1", relaytest.Step{After: 4, Hold: paused})

	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	doc, _ := json.Marshal(map[string]any{
		"listen":      "127.0.0.1:0",
		"accounts":    []map[string]any{{"id": "a1", "base_url": up.BaseURL("a1"), "api_key": upstreamKey("a1")}},
		"api_keys":    []map[string]any{{"key": keyAlice, "user_id": "alice", "budget": map[string]any{"usd": 100}}},
		"usage":       map[string]any{"driver": db.driver, "dsn": db.dsn, "spool": spool},
		"prices":      map[string]any{"gpt-5": map[string]any{"input": 1.25, "cached_input": 0.125, "output": 10}},
		"admin_token": adminToken,
	})
	config := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(config, doc, 0o600); err != nil {
		t.Fatal(err)
	}

	first := startChild(t, "-config", config)
	lift := refuseRows(t, db)
	lifted := false
	defer func() {
		if !lifted {
			lift()
		}
	}()
	tr := startTraffic(first.addr, clients)
	defer tr.close()
	waitUntil(t, "every client in a paused turn", func() bool {
		return up.InFlight("a1") == clients && tr.completedCount() == completed || len(tr.failures()) > 0
	})
	if errs := tr.failures(); len(errs) > 0 {
		t.Fatalf("turns failed before the kill: %v", errs)
	}
	// The completed turns settle although their rows are refused; the
	// paused ones hold.
	var spent int64
	waitUntil(t, "the completed turns to settle", func() bool {
		var holds int64
		holds, spent = childKey(t, first.addr, keyAlice).holdsAndSpent()
		return holds == clients
	})
	conn := db.open(t)
	rowsAtKill := countRows(t, conn)
	conn.Close()
	if spent <= 0 || rowsAtKill != 0 {
		t.Fatalf("before the kill: spent %d, %d rows; want a spend and no rows", spent, rowsAtKill)
	}
	tr.killed.Store(true)
	first.kill(t)
	tr.wg.Wait()
	waitUntil(t, "the fake to see relayd's connections end", func() bool { return up.InFlight("a1") == 0 })
	lift()
	lifted = true

	second := startChild(t, "-config", config)
	if !strings.Contains(second.logs.String(), `released the holds of turns an earlier run left in flight" released=4 failed=0`) {
		t.Fatalf("no release of the killed turns' holds in the log:\n%s", second.logs)
	}
	k := childKey(t, second.addr, keyAlice)
	if holds, s := k.holdsAndSpent(); holds != 0 || s != spent {
		t.Fatalf("after the restart: %d holds, spent %d; want 0 and %d", holds, s, spent)
	}
	conn = db.open(t)
	defer conn.Close()
	waitUntil(t, "the spool to deliver the records", func() bool { return countRows(t, conn) == completed })
	var sum int64
	for _, row := range db.rows(t) {
		sum += row.CostMicros
	}
	k = childKey(t, second.addr, keyAlice)
	if holds, s := k.holdsAndSpent(); holds != 0 || s != spent || s != sum {
		t.Fatalf("after the replay: %d holds, spent %d, rows cost %d; want 0 and %d", holds, s, sum, spent)
	}
	if k.RemainingMicros == nil || *k.RemainingMicros != 100_000_000-spent {
		t.Fatalf("remaining %v, want %d", k.RemainingMicros, 100_000_000-spent)
	}
	if code := second.stop(t); code != 0 {
		t.Fatalf("relayd exited %d", code)
	}
	if b, err := os.ReadFile(filepath.Join(spool, holdJournalFile)); err != nil || len(b) != 0 {
		t.Fatalf("hold journal after a clean stop: %q, %v", b, err)
	}
	t.Logf("%s: %d turns settled (%d micro-USD) before SIGKILL with no row written, %d holds of paused turns; after the restart 0 holds, %d rows costing %d",
		db.driver, completed, spent, clients, completed, sum)
}
