package sqlledger_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/sqltest"
	"github.com/relaykit/responsesrelay/examples/sqlledger"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is a fresh, empty database of one driver.
type target sqltest.Target

func sqliteTarget(tb testing.TB) target { return target(sqltest.SQLite(tb, "ledger.db")) }

func postgresTarget(tb testing.TB) target { return target(sqltest.Postgres(tb, "sqlledger_test_")) }

// open opens a Ledger on the target, closed at cleanup: each is a relay
// instance of its own (its own connections).
func (tg target) open(tb testing.TB, o *sqlledger.Options) *sqlledger.Ledger {
	tb.Helper()
	return sqltest.Open(tb, func(ctx context.Context) (*sqlledger.Ledger, error) {
		return sqlledger.Open(ctx, tg.Driver, tg.DSN, o)
	})
}

// instances opens Ledgers on one fresh database of the driver.
func instances(newTarget func(testing.TB) target) func(t *testing.T) func() billing.Ledger {
	return func(t *testing.T) func() billing.Ledger {
		tg := newTarget(t)
		return func() billing.Ledger { return tg.open(t, nil) }
	}
}

// eachDriver runs f once per driver, as subtests "sqlite" and "postgres".
func eachDriver(t *testing.T, f func(t *testing.T, tg target)) {
	sqltest.EachDriver(t, sqliteTarget, postgresTarget, f)
}

// count counts a table's rows.
func count(t testing.TB, l *sqlledger.Ledger, table string) int64 {
	t.Helper()
	return sqltest.QueryInt(t, l.Pool(), l.DB(), `SELECT count(*) FROM `+table)
}
