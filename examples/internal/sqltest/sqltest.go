// Package sqltest holds what the tests of the examples' SQL stores share:
// a fresh database per driver, opening a store on it, and reading rows
// back whichever driver holds them.
package sqltest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
)

// Target is a fresh, empty database of one driver ("sqlite" or
// "postgres", the stores' driver names).
type Target struct {
	Driver, DSN string
}

// SQLite is a database file named file in a temporary directory.
func SQLite(tb testing.TB, file string) Target {
	return Target{"sqlite", filepath.Join(tb.TempDir(), file)}
}

// Postgres is an empty schema of the test server named with prefix,
// dropped at cleanup; the test is skipped without a server outside CI
// (pgtest.URL).
func Postgres(tb testing.TB, prefix string) Target {
	return Target{"postgres", pgtest.DSN(tb, prefix)}
}

// EachDriver runs f once per driver, as subtests "sqlite" and "postgres",
// on the targets sqlite and postgres make.
func EachDriver[T any](t *testing.T, sqlite, postgres func(testing.TB) T, f func(t *testing.T, tg T)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqlite(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, postgres(t)) })
}

// Open calls open with a 10 s deadline and closes what it returns at
// cleanup, failing the test on either error.
func Open[S interface{ Close() error }](tb testing.TB, open func(ctx context.Context) (S, error)) S {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := open(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// QueryInt runs a query returning one integer, through pool when it is
// not nil, else db. Written with $1-style placeholders it suits both
// drivers: SQLite also accepts them.
func QueryInt(tb testing.TB, pool *pgxpool.Pool, db *sql.DB, query string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := Scan(pool, db, query, args, &n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// Scan runs query with args through pool when it is not nil, else db,
// and scans its one row into dest, with a 10 s deadline.
func Scan(pool *pgxpool.Pool, db *sql.DB, query string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pool != nil {
		return pool.QueryRow(ctx, query, args...).Scan(dest...)
	}
	return db.QueryRowContext(ctx, query, args...).Scan(dest...)
}
