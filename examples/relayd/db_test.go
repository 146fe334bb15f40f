package main

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// usageDB is a usage database as relayd's config names it.
type usageDB struct {
	driver, dsn string
}

func sqliteDB(t testing.TB) usageDB {
	return usageDB{sqlusage.DriverSQLite, filepath.Join(t.TempDir(), "usage.db")}
}

// postgresDB is an empty schema of the server named by
// RELAY_TEST_POSTGRES_URL (see pgtest.DSN), dropped at cleanup; the DSN
// selects it through search_path, so tests never share a usage_records
// table.
func postgresDB(t testing.TB) usageDB {
	t.Helper()
	return usageDB{sqlusage.DriverPostgres, pgtest.DSN(t, "relayd_test_")}
}

// eachDB runs f as subtests "sqlite" and "postgres", with a function
// making an empty database of that kind.
func eachDB(t *testing.T, f func(t *testing.T, newDB func(testing.TB) usageDB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteDB) })
	t.Run("postgres", func(t *testing.T) {
		pgtest.URL(t) // skips the subtest when there is no server
		f(t, postgresDB)
	})
}

// open opens the database with database/sql; the caller closes it.
func (d usageDB) open(t testing.TB) *sql.DB {
	t.Helper()
	name := "sqlite"
	if d.driver == sqlusage.DriverPostgres {
		name = "pgx"
	}
	db, err := sql.Open(name, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// rows reads every usage row, keyed by request id.
func (d usageDB) rows(t testing.TB) map[string]usageRow {
	t.Helper()
	db := d.open(t)
	defer db.Close()
	return queryRows(t, db)
}

// countRows is the number of usage rows.
func countRows(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM usage_records`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func queryRows(t testing.TB, db *sql.DB) map[string]usageRow {
	t.Helper()
	rs, err := db.Query(`SELECT request_id, response_id, user_id, api_key_id, group_id, account_id, model,
		upstream_model, transport, status, created_at, stream, turn, input_tokens, cached_input_tokens,
		output_tokens, reasoning_tokens, total_tokens, attempts, duration_ms, first_token_ms, cost_micros FROM usage_records`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]usageRow{}
	for rs.Next() {
		var r usageRow
		if err := rs.Scan(&r.RequestID, &r.ResponseID, &r.UserID, &r.APIKeyID, &r.GroupID, &r.AccountID, &r.Model,
			&r.UpstreamModel, &r.Transport, &r.Status, &r.CreatedAt, &r.Stream, &r.Turn, &r.Input, &r.Cached,
			&r.Output, &r.Reasoning, &r.Total, &r.Attempts, &r.DurationMS, &r.FirstTokenMS, &r.CostMicros); err != nil {
			t.Fatal(err)
		}
		out[r.RequestID] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
