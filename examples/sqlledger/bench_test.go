package sqlledger_test

import (
	"testing"

	"github.com/relaykit/responsesrelay/examples/internal/ledgercheck"
)

// One turn's Hold and Settle: two transactions.
func BenchmarkSQLiteHoldSettle(b *testing.B) {
	ledgercheck.BenchHoldSettle(b, sqliteTarget(b).open(b, nil), false)
}

func BenchmarkPostgresHoldSettle(b *testing.B) {
	ledgercheck.BenchHoldSettle(b, postgresTarget(b).open(b, nil), false)
}

// From GOMAXPROCS goroutines on one key and user: they take turns on the
// scope rows.
func BenchmarkPostgresHoldSettleParallel(b *testing.B) {
	ledgercheck.BenchHoldSettle(b, postgresTarget(b).open(b, nil), true)
}
