// Package pgtest finds the PostgreSQL server of the examples' tests and
// gives each test a schema of its own on it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// URL returns RELAY_TEST_POSTGRES_URL once the server answers. Without it
// the test is skipped, except in CI (CI=true), where .ci/run starts
// PostgreSQL and a missing or dead server is a failure.
func URL(tb testing.TB) string {
	tb.Helper()
	ci := os.Getenv("CI") == "true"
	raw := os.Getenv("RELAY_TEST_POSTGRES_URL")
	if raw == "" {
		if ci {
			tb.Fatal("RELAY_TEST_POSTGRES_URL is not set; .ci/run starts PostgreSQL and exports it")
		}
		tb.Skip("RELAY_TEST_POSTGRES_URL is not set: start PostgreSQL and set it " +
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
			tb.Fatalf("PostgreSQL at RELAY_TEST_POSTGRES_URL=%q is unreachable: %v", raw, err)
		}
		tb.Skipf("PostgreSQL at RELAY_TEST_POSTGRES_URL=%q is unreachable (%v): start it to run the PostgreSQL tests", raw, err)
	}
	return raw
}

// DSN creates an empty schema named prefix plus 12 random hex digits on
// the server of URL, dropped at cleanup, and returns that server's URL
// with the schema as its search_path, so that tests never share a table.
func DSN(tb testing.TB, prefix string) string {
	tb.Helper()
	raw := URL(tb)
	schema := prefix + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, raw)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("RELAY_TEST_POSTGRES_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
