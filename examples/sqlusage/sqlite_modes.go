package sqlusage

import "github.com/relaykit/responsesrelay/examples/internal/sqlitefile"

// Usage records name users, keys and client addresses, so the database is
// the owner's alone: see sqlitefile.Mode.

func sqlitePath(dsn string) string { return sqlitefile.Path(dsn) }

func prepareSQLiteFile(path string) error { return sqlitefile.Create(path) }

func tightenSQLiteFiles(path string) { sqlitefile.Tighten(path, "sqlusage", "usage database") }
