package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

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
// RELAY_TEST_POSTGRES_URL (see postgresURL), dropped at cleanup; the DSN
// selects it through search_path, so tests never share a usage_records
// table.
func postgresDB(t testing.TB) usageDB {
	t.Helper()
	raw := postgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "relayd_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, raw)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			conn.Close(ctx)
		}
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("RELAY_TEST_POSTGRES_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return usageDB{sqlusage.DriverPostgres, u.String()}
}

// postgresURL returns RELAY_TEST_POSTGRES_URL once the server answers.
// Without it the test is skipped, except in CI (CI=true), where .ci/run
// starts PostgreSQL and a missing or dead server is a failure.
func postgresURL(t testing.TB) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	raw := os.Getenv("RELAY_TEST_POSTGRES_URL")
	if raw == "" {
		if ci {
			t.Fatal("RELAY_TEST_POSTGRES_URL is not set; .ci/run starts PostgreSQL and exports it")
		}
		t.Skip("RELAY_TEST_POSTGRES_URL is not set: start PostgreSQL and set it " +
			"(e.g. postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable) to run the PostgreSQL tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		if ci {
			t.Fatalf("PostgreSQL at RELAY_TEST_POSTGRES_URL is unreachable: %v", err)
		}
		t.Skipf("PostgreSQL at RELAY_TEST_POSTGRES_URL is unreachable (%v): start it to run the PostgreSQL tests", err)
	}
	return raw
}

// eachDB runs f as subtests "sqlite" and "postgres", with a function
// making an empty database of that kind.
func eachDB(t *testing.T, f func(t *testing.T, newDB func(testing.TB) usageDB)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteDB) })
	t.Run("postgres", func(t *testing.T) {
		postgresURL(t) // skips the subtest when there is no server
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
		output_tokens, reasoning_tokens, total_tokens, attempts, duration_ms, first_token_ms FROM usage_records`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]usageRow{}
	for rs.Next() {
		var r usageRow
		if err := rs.Scan(&r.RequestID, &r.ResponseID, &r.UserID, &r.APIKeyID, &r.GroupID, &r.AccountID, &r.Model,
			&r.UpstreamModel, &r.Transport, &r.Status, &r.CreatedAt, &r.Stream, &r.Turn, &r.Input, &r.Cached,
			&r.Output, &r.Reasoning, &r.Total, &r.Attempts, &r.DurationMS, &r.FirstTokenMS); err != nil {
			t.Fatal(err)
		}
		out[r.RequestID] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
