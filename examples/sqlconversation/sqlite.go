package sqlconversation

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/relaykit/responsesrelay/examples/internal/sqlitefile"
)

// SQLiteSchema creates the SQLite conversation_records table and its
// expiry index. It is safe to run on every start.
const SQLiteSchema = `
CREATE TABLE IF NOT EXISTS conversation_records (
	api_key_id  TEXT NOT NULL,
	response_id TEXT NOT NULL,
	record      BLOB NOT NULL,
	stored_at   TEXT NOT NULL,
	expires_at  TEXT NOT NULL,
	PRIMARY KEY (api_key_id, response_id)
);
CREATE INDEX IF NOT EXISTS conversation_records_expires ON conversation_records (expires_at);
`

// TimeFormat is the layout of stored_at and expires_at in SQLite: UTC,
// fixed width, so that text order is time order.
const TimeFormat = "2006-01-02T15:04:05.000000000Z"

// BusyTimeout is how long a connection waits for another writer before a
// statement fails.
const BusyTimeout = 5 * time.Second

const (
	sqliteGet = `SELECT record FROM conversation_records
	WHERE api_key_id = ? AND response_id = ? AND expires_at > ?`
	sqlitePut = `INSERT INTO conversation_records (api_key_id, response_id, record, stored_at, expires_at)
	VALUES (?, ?, ?, ?, ?)
	ON CONFLICT (api_key_id, response_id) DO UPDATE SET
	record = excluded.record, stored_at = excluded.stored_at, expires_at = excluded.expires_at`
	sqliteDelete        = `DELETE FROM conversation_records WHERE api_key_id = ? AND response_id = ?`
	sqliteDeleteExpired = `DELETE FROM conversation_records WHERE rowid IN
	(SELECT rowid FROM conversation_records WHERE expires_at <= ? LIMIT ?)`
)

// OpenSQLite opens (creating if needed) the SQLite database at dsn, a file
// path or a "file:" URI, in WAL mode with synchronous=NORMAL (a power loss
// may lose the last records, never corrupt the file; a lost record costs a
// failover its context, nothing more) and a busy timeout, and creates the
// table. Close closes the database.
func OpenSQLite(ctx context.Context, dsn string, o *Options) (*Store, error) {
	var s *Store
	_, err := sqlitefile.Open(ctx, dsn, "sqlconversation", "conversation database", func(db *sql.DB) (err error) {
		s, err = newSQLite(ctx, db, true, o)
		return err
	}, fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()), "journal_mode(WAL)", "synchronous(NORMAL)")
	return s, err
}

// NewSQLite creates the table in db, a SQLite database, if needed and
// returns a Store over it; Close does not close db.
func NewSQLite(ctx context.Context, db *sql.DB, o *Options) (*Store, error) {
	return newSQLite(ctx, db, false, o)
}

func newSQLite(ctx context.Context, db *sql.DB, ownDB bool, o *Options) (*Store, error) {
	if _, err := db.ExecContext(ctx, SQLiteSchema); err != nil {
		return nil, fmt.Errorf("sqlconversation: create schema: %w", err)
	}
	s, err := newStore(DriverSQLite, &sqliteBackend{db: db, ownDB: ownDB}, o)
	if err != nil {
		return nil, err
	}
	s.db = db
	return s, nil
}

type sqliteBackend struct {
	db    *sql.DB
	ownDB bool
}

func sqliteTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

func (q *sqliteBackend) get(ctx context.Context, apiKeyID, responseID string, now time.Time) ([]byte, error) {
	var rec []byte
	err := q.db.QueryRowContext(ctx, sqliteGet, apiKeyID, responseID, sqliteTime(now)).Scan(&rec)
	return scanned(rec, err, sql.ErrNoRows)
}

func (q *sqliteBackend) put(ctx context.Context, apiKeyID, responseID string, record []byte, now, expires time.Time) error {
	_, err := q.db.ExecContext(ctx, sqlitePut, apiKeyID, responseID, record, sqliteTime(now), sqliteTime(expires))
	return err
}

func (q *sqliteBackend) delete(ctx context.Context, apiKeyID, responseID string) error {
	_, err := q.db.ExecContext(ctx, sqliteDelete, apiKeyID, responseID)
	return err
}

func (q *sqliteBackend) deleteExpired(ctx context.Context, now time.Time, limit int) (int64, error) {
	res, err := q.db.ExecContext(ctx, sqliteDeleteExpired, sqliteTime(now), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q *sqliteBackend) close() error {
	if q.ownDB {
		return q.db.Close()
	}
	return nil
}
