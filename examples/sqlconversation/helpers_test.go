package sqlconversation_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/internal/pgtest"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is a fresh, empty database of one driver.
type target struct {
	driver, dsn string
}

func sqliteTarget(tb testing.TB) target {
	return target{sqlconversation.DriverSQLite, filepath.Join(tb.TempDir(), "conversations.db")}
}

// postgresTarget is an empty schema of the test server, dropped at
// cleanup; the test is skipped without a server outside CI (pgtest.URL).
func postgresTarget(tb testing.TB) target {
	return target{sqlconversation.DriverPostgres, pgtest.DSN(tb, "sqlconv_test_")}
}

// open opens a Store on the target, closed at cleanup.
func (tg target) open(tb testing.TB, o *sqlconversation.Options) *sqlconversation.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := sqlconversation.Open(ctx, tg.driver, tg.dsn, o)
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

// eachDriver runs f once per driver, as subtests "sqlite" and "postgres".
func eachDriver(t *testing.T, f func(t *testing.T, tg target)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteTarget(t)) })
	t.Run("postgres", func(t *testing.T) { f(t, postgresTarget(t)) })
}

// countRows counts the table's rows, expired ones included.
func countRows(t testing.TB, s *sqlconversation.Store) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const q = `SELECT count(*) FROM conversation_records`
	var n int64
	var err error
	if s.Pool() != nil {
		err = s.Pool().QueryRow(ctx, q).Scan(&n)
	} else {
		err = s.DB().QueryRowContext(ctx, q).Scan(&n)
	}
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// clock is a hand-moved Options.Now. It starts on a whole microsecond,
// PostgreSQL's precision.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
