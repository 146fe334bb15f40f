package sqlitefile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens the SQLite database at dsn with the given pragmas (see
// WithPragmas), creating a missing file owner-only first, on a single
// connection: SQLite takes one writer at a time, so one connection queues
// the writes in-process instead of contending for the file lock, and keeps
// ":memory:" databases one database. init creates the schema; on its
// error the database is closed. The side files are tightened afterwards,
// when they exist. who prefixes the errors and log lines ("sqlusage"),
// what names the database in the log ("usage database").
func Open(ctx context.Context, dsn, who, what string, init func(*sql.DB) error, pragmas ...string) (*sql.DB, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New(who + ": empty SQLite DSN")
	}
	path := Path(dsn)
	if err := Create(path); err != nil {
		return nil, fmt.Errorf("%s: create %s: %w", who, path, err)
	}
	db, err := sql.Open("sqlite", WithPragmas(dsn, pragmas...))
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", who, dsn, err)
	}
	db.SetMaxOpenConns(1)
	if err := init(db); err != nil {
		db.Close()
		return nil, err
	}
	Tighten(path, who, what) // the -wal and -shm files exist by now
	return db, nil
}
