package sqlusage_test

import (
	"context"
	"database/sql"
	"math"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// oldSchema is usage_records as the first version created it, before
// cost_micros; the PostgreSQL one differs only in its types, which do
// not matter here.
const oldSchema = `CREATE TABLE usage_records (
	request_id TEXT PRIMARY KEY, response_id TEXT NOT NULL DEFAULT '', user_id TEXT NOT NULL DEFAULT '',
	api_key_id TEXT NOT NULL DEFAULT '', group_id TEXT NOT NULL DEFAULT '', account_id TEXT NOT NULL DEFAULT '',
	model TEXT NOT NULL DEFAULT '', upstream_model TEXT NOT NULL DEFAULT '', transport TEXT NOT NULL DEFAULT '',
	stream %BOOL% NOT NULL DEFAULT %FALSE%, turn INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT '',
	input_tokens BIGINT NOT NULL DEFAULT 0, cached_input_tokens BIGINT NOT NULL DEFAULT 0,
	output_tokens BIGINT NOT NULL DEFAULT 0, reasoning_tokens BIGINT NOT NULL DEFAULT 0,
	total_tokens BIGINT NOT NULL DEFAULT 0, service_tier TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
	first_token_ms BIGINT, duration_ms BIGINT NOT NULL DEFAULT 0, user_agent TEXT NOT NULL DEFAULT '',
	client_ip TEXT NOT NULL DEFAULT '', created_at %TIME% NOT NULL)`

// rawDB opens the target with database/sql, bypassing the Sink.
func rawDB(t *testing.T, tg target) *sql.DB {
	t.Helper()
	name := "sqlite"
	if tg.Driver == sqlusage.DriverPostgres {
		name = "pgx"
	}
	db, err := sql.Open(name, tg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// createOld makes the table of the first version, with one row.
func createOld(t *testing.T, tg target) {
	t.Helper()
	ddl := strings.NewReplacer("%BOOL%", "INTEGER", "%FALSE%", "0", "%TIME%", "TEXT").Replace(oldSchema)
	created := "2025-01-02T03:04:05.000Z"
	if tg.Driver == sqlusage.DriverPostgres {
		ddl = strings.NewReplacer("%BOOL%", "BOOLEAN", "%FALSE%", "false", "%TIME%", "TIMESTAMPTZ").Replace(oldSchema)
	}
	db := rawDB(t, tg)
	if _, err := db.Exec(ddl); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO usage_records (request_id, input_tokens, created_at) VALUES ('rr_old', 7, $1)`, created); err != nil {
		t.Fatal(err)
	}
}

// A database an earlier version created gains cost_micros when a Sink
// opens it: the rows already there cost 0, new ones their cost, and
// opening it again changes nothing.
func TestMigratesTableWithoutCost(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		createOld(t, tg)
		for i, id := range []string{"rr_new", "rr_again"} {
			s := tg.open(t)
			u := sample(id)
			u.CostMicros = int64(1000 + i)
			if err := s.Record(context.Background(), u); err != nil {
				t.Fatal(err)
			}
			if n := countRows(t, s); n != int64(2+i) {
				t.Fatalf("open %d: %d rows", i, n)
			}
			if c := queryInt(t, s, `SELECT cost_micros FROM usage_records WHERE request_id = 'rr_old'`); c != 0 {
				t.Fatalf("old row cost_micros = %d", c)
			}
			if c := queryInt(t, s, `SELECT cost_micros FROM usage_records WHERE request_id = $1`, id); c != u.CostMicros {
				t.Fatalf("new row cost_micros = %d, want %d", c, u.CostMicros)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		// The column is last, as in a table the current version creates.
		var last string
		q := `SELECT name FROM pragma_table_info('usage_records') ORDER BY cid DESC LIMIT 1`
		if tg.Driver == sqlusage.DriverPostgres {
			q = `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()
				AND table_name = 'usage_records' ORDER BY ordinal_position DESC LIMIT 1`
		}
		if err := rawDB(t, tg).QueryRow(q).Scan(&last); err != nil || last != "cost_micros" {
			t.Fatalf("last column %q, %v", last, err)
		}
	})
}

// Relays starting together on an old table all open it; the column is
// added once.
func TestMigrateConcurrentOpen(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		createOld(t, tg)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				s, err := sqlusage.Open(context.Background(), tg.Driver, tg.DSN)
				if err == nil {
					err = s.Close()
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		s := tg.open(t)
		if n := queryInt(t, s, `SELECT count(*) FROM usage_records WHERE cost_micros = 0`); n != 1 {
			t.Fatalf("%d rows with cost 0", n)
		}
	})
}

// cost_micros holds any int64: a cost Prices clamps at MaxInt64 comes
// back whole.
func TestCostMicrosRoundTrip(t *testing.T) {
	eachDriver(t, func(t *testing.T, tg target) {
		s := tg.open(t)
		for id, cost := range map[string]int64{"rr_zero": 0, "rr_some": 1_234_567, "rr_max": math.MaxInt64} {
			u := sample(id)
			u.CostMicros = cost
			if err := s.Record(context.Background(), u); err != nil {
				t.Fatal(err)
			}
			var got int64
			if err := sqltest.Scan(s.Pool(), s.DB(), `SELECT cost_micros FROM usage_records WHERE request_id = $1`,
				[]any{id}, &got); err != nil || got != cost {
				t.Fatalf("%s: cost_micros = %d, %v; want %d", id, got, err, cost)
			}
		}
	})
}
