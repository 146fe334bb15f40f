package sqlconversation_test

import (
	"testing"

	"github.com/relaykit/responsesrelay/examples/internal/convtest"
)

// Puts use distinct ids, cleanup on.
func BenchmarkSQLitePut(b *testing.B)   { convtest.BenchPut(b, sqliteTarget(b).open(b, nil), 0) }
func BenchmarkSQLiteGet(b *testing.B)   { convtest.BenchGet(b, sqliteTarget(b).open(b, nil)) }
func BenchmarkPostgresPut(b *testing.B) { convtest.BenchPut(b, postgresTarget(b).open(b, nil), 0) }
func BenchmarkPostgresGet(b *testing.B) { convtest.BenchGet(b, postgresTarget(b).open(b, nil)) }
