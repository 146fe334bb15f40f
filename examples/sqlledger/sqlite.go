package sqlledger

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/relaykit/responsesrelay/examples/internal/sqlitefile"
)

// SQLiteSchema creates the SQLite tables and indexes. It is safe to run on
// every start.
const SQLiteSchema = `
CREATE TABLE IF NOT EXISTS ledger_spend (
	scope    TEXT NOT NULL,
	scope_id TEXT NOT NULL,
	period   TEXT NOT NULL,
	micros   INTEGER NOT NULL,
	PRIMARY KEY (scope, scope_id, period)
);
CREATE TABLE IF NOT EXISTS ledger_rates (
	scope    TEXT NOT NULL,
	scope_id TEXT NOT NULL,
	minute   INTEGER NOT NULL,
	requests INTEGER NOT NULL,
	tokens   INTEGER NOT NULL,
	PRIMARY KEY (scope, scope_id)
);
CREATE TABLE IF NOT EXISTS ledger_holds (
	request_id TEXT PRIMARY KEY,
	api_key_id TEXT,
	user_id    TEXT,
	micros     INTEGER NOT NULL,
	tokens     INTEGER NOT NULL,
	minute     INTEGER NOT NULL,
	created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_holds_key ON ledger_holds (api_key_id, created_ms);
CREATE INDEX IF NOT EXISTS ledger_holds_user ON ledger_holds (user_id, created_ms);
CREATE INDEX IF NOT EXISTS ledger_holds_created ON ledger_holds (created_ms);
CREATE TABLE IF NOT EXISTS ledger_settled (
	request_id TEXT PRIMARY KEY,
	settled_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_settled_at ON ledger_settled (settled_ms);
`

// BusyTimeout is how long a connection waits for another writer (another
// process on the same file, a report) before a statement fails.
const BusyTimeout = 5 * time.Second

var sqliteDialect = dialect{
	correctTokens: `UPDATE ledger_rates SET tokens = max(tokens + $4, 0) WHERE scope = $1 AND scope_id = $2 AND minute = $3`,
	deleteHolds: `DELETE FROM ledger_holds WHERE rowid IN
	(SELECT rowid FROM ledger_holds WHERE created_ms <= $1 LIMIT $2)`,
	deleteSettled: `DELETE FROM ledger_settled WHERE rowid IN
	(SELECT rowid FROM ledger_settled WHERE settled_ms <= $1 LIMIT $2)`,
}

// OpenSQLite opens (creating if needed) the SQLite database at dsn, a file
// path or a "file:" URI, in WAL mode with a busy timeout and SQLite's
// default synchronous=FULL (a commit survives a power loss: a settled
// debit is money), and creates the tables. Close closes the database.
func OpenSQLite(ctx context.Context, dsn string, o *Options) (*Ledger, error) {
	var l *Ledger
	_, err := sqlitefile.Open(ctx, dsn, "sqlledger", "ledger database", func(db *sql.DB) (err error) {
		l, err = newSQLite(ctx, db, true, o)
		return err
	}, fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()), "journal_mode(WAL)")
	return l, err
}

// NewSQLite creates the tables in db, a SQLite database, if needed and
// returns a Ledger over it; Close does not close db. Give db a busy
// timeout when other connections or processes write to the file.
func NewSQLite(ctx context.Context, db *sql.DB, o *Options) (*Ledger, error) {
	return newSQLite(ctx, db, false, o)
}

func newSQLite(ctx context.Context, db *sql.DB, ownDB bool, o *Options) (*Ledger, error) {
	if _, err := db.ExecContext(ctx, SQLiteSchema); err != nil {
		return nil, fmt.Errorf("sqlledger: create schema: %w", err)
	}
	l := newLedger(DriverSQLite, &sqliteBackend{db: db, ownDB: ownDB}, o)
	l.db = db
	return l, nil
}

type sqliteBackend struct {
	db    *sql.DB
	ownDB bool
}

// sqliteQ runs statements on a database or on one connection.
type sqliteQ struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
}

func (s sqliteQ) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqliteQ) row(ctx context.Context, query string, args ...any) scanner {
	return s.q.QueryRowContext(ctx, query, args...)
}

// inTx runs f between BEGIN IMMEDIATE and COMMIT on one connection: the
// write lock is taken before the first read, so no other writer, in this
// process or another, runs between f's reads and its writes, and none
// has to be retried (a deferred transaction that reads first can fail to
// upgrade to a writer without waiting for the busy timeout).
func (b *sqliteBackend) inTx(ctx context.Context, f func(q querier) error) (err error) {
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	end := func(stmt string) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
		_, err := conn.ExecContext(ctx, stmt)
		return err
	}
	if err := f(sqliteQ{conn}); err != nil {
		if rerr := end("ROLLBACK"); rerr != nil {
			discard(conn)
		}
		return err
	}
	if err := end("COMMIT"); err != nil {
		if rerr := end("ROLLBACK"); rerr != nil {
			discard(conn)
		}
		return err
	}
	return nil
}

// discard drops a connection whose transaction could not be ended, so
// that it never serves another caller inside that transaction.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
}

func (b *sqliteBackend) plain() querier        { return sqliteQ{b.db} }
func (b *sqliteBackend) noRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
func (b *sqliteBackend) text(s string) string  { return s }
func (b *sqliteBackend) dialect() dialect      { return sqliteDialect }

func (b *sqliteBackend) close() error {
	if b.ownDB {
		return b.db.Close()
	}
	return nil
}
