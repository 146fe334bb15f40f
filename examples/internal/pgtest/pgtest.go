// Package pgtest finds the PostgreSQL server of the examples' tests and
// gives each test a schema of its own on it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/relaykit/responsesrelay/examples/internal/testservice"
)

// URL returns RELAY_TEST_POSTGRES_URL once the server answers. Without it
// the test is skipped, except in CI (CI=true), where .ci/run starts
// PostgreSQL and a missing or dead server is a failure.
func URL(tb testing.TB) string {
	tb.Helper()
	return postgres.URL(tb, func(ctx context.Context, raw string) error {
		conn, err := pgx.Connect(ctx, raw)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	})
}

var postgres = testservice.Service{Env: "RELAY_TEST_POSTGRES_URL", Name: "PostgreSQL", Server: "PostgreSQL",
	Example: "postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable", Timeout: 10 * time.Second}

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
