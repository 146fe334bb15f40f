package sqlconversation_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlconversation"
	"github.com/relaykit/responsesrelay/internal/testclock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is a fresh, empty database of one driver.
type target sqltest.Target

func sqliteTarget(tb testing.TB) target { return target(sqltest.SQLite(tb, "conversations.db")) }

func postgresTarget(tb testing.TB) target { return target(sqltest.Postgres(tb, "sqlconv_test_")) }

// open opens a Store on the target, closed at cleanup.
func (tg target) open(tb testing.TB, o *sqlconversation.Options) *sqlconversation.Store {
	tb.Helper()
	return sqltest.Open(tb, func(ctx context.Context) (*sqlconversation.Store, error) {
		return sqlconversation.Open(ctx, tg.Driver, tg.DSN, o)
	})
}

// eachDriver runs f once per driver, as subtests "sqlite" and "postgres".
func eachDriver(t *testing.T, f func(t *testing.T, tg target)) {
	sqltest.EachDriver(t, sqliteTarget, postgresTarget, f)
}

// countRows counts the table's rows, expired ones included.
func countRows(t testing.TB, s *sqlconversation.Store) int64 {
	t.Helper()
	return sqltest.QueryInt(t, s.Pool(), s.DB(), `SELECT count(*) FROM conversation_records`)
}

// newClock is a hand-moved Options.Now. It starts on a whole microsecond,
// PostgreSQL's precision.
func newClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC))
}
