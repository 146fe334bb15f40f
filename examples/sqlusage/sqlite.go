package sqlusage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/sqlitefile"
)

// Schema creates the SQLite usage_records table and its index. It is safe
// to run on every start. A table an earlier version created lacks the
// columns added since; opening a Sink adds them.
const Schema = `
CREATE TABLE IF NOT EXISTS usage_records (
	request_id          TEXT PRIMARY KEY,
	response_id         TEXT NOT NULL DEFAULT '',
	user_id             TEXT NOT NULL DEFAULT '',
	api_key_id          TEXT NOT NULL DEFAULT '',
	group_id            TEXT NOT NULL DEFAULT '',
	account_id          TEXT NOT NULL DEFAULT '',
	model               TEXT NOT NULL DEFAULT '',
	upstream_model      TEXT NOT NULL DEFAULT '',
	transport           TEXT NOT NULL DEFAULT '',
	stream              INTEGER NOT NULL DEFAULT 0,
	turn                INTEGER NOT NULL DEFAULT 0,
	status              TEXT NOT NULL DEFAULT '',
	input_tokens        INTEGER NOT NULL DEFAULT 0,
	cached_input_tokens INTEGER NOT NULL DEFAULT 0,
	output_tokens       INTEGER NOT NULL DEFAULT 0,
	reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
	total_tokens        INTEGER NOT NULL DEFAULT 0,
	service_tier        TEXT NOT NULL DEFAULT '',
	attempts            INTEGER NOT NULL DEFAULT 0,
	first_token_ms      INTEGER,
	duration_ms         INTEGER NOT NULL DEFAULT 0,
	user_agent          TEXT NOT NULL DEFAULT '',
	client_ip           TEXT NOT NULL DEFAULT '',
	created_at          TEXT NOT NULL,
	cost_micros         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_records_user_created ON usage_records (user_id, created_at);
`

// TimeFormat is the layout of created_at in SQLite: UTC, fixed width, so
// that text order is time order.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// BusyTimeout is how long a connection waits for another writer (for
// example a reporting job) before an insert fails and billing.Async retries.
const BusyTimeout = 5 * time.Second

const sqliteInsertHead = `INSERT OR IGNORE INTO usage_records (
	request_id, response_id, user_id, api_key_id, group_id, account_id,
	model, upstream_model, transport, stream, turn, status,
	input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens,
	service_tier, attempts, first_token_ms, duration_ms, user_agent, client_ip, created_at, cost_micros
) VALUES `

// sqliteColumns is the number of values a row binds.
const sqliteColumns = 25

// sqliteInsertSizes are the row counts of the prepared INSERTs, largest
// first: a batch is written as the fewest of them (a batch of 10 as 8 and
// 2). One statement per row cost SQLite (its virtual machine and the
// driver's call into it) 16 µs of CPU per record in full batches; at most
// 32 rows keep a statement's 800 values under SQLite's oldest bound of 999.
var sqliteInsertSizes = [...]int{32, 16, 8, 4, 2, 1}

// sqliteInsert is the INSERT of n rows.
func sqliteInsert(n int) string {
	row := "(" + strings.Repeat("?, ", sqliteColumns-1) + "?)"
	return sqliteInsertHead + strings.Repeat(row+", ", n-1) + row
}

// OpenSQLite opens (creating if needed) the SQLite database at dsn, a file
// path or a "file:" URI, switches it to WAL mode with a busy timeout, and
// creates the table. Shutting the Sink down closes the database.
func OpenSQLite(ctx context.Context, dsn string, opts ...Option) (*Sink, error) {
	var st *sqliteStore
	db, err := sqlitefile.Open(ctx, dsn, "sqlusage", "usage database", func(db *sql.DB) (err error) {
		st, err = newSQLiteStore(ctx, db, true)
		return err
	}, fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()), "journal_mode(WAL)")
	if err != nil {
		return nil, err
	}
	s := newSink(DriverSQLite, st, newConfig(1, opts))
	s.db = db
	return s, nil
}

// New creates the table in db if needed and returns a Sink over it. db
// must be a SQLite database; shutting the Sink down does not close it.
func New(ctx context.Context, db *sql.DB, opts ...Option) (*Sink, error) {
	st, err := newSQLiteStore(ctx, db, false)
	if err != nil {
		return nil, err
	}
	s := newSink(DriverSQLite, st, newConfig(1, opts))
	s.db = db
	return s, nil
}

type sqliteStore struct {
	db *sql.DB
	// inserts[i] inserts sqliteInsertSizes[i] rows.
	inserts [len(sqliteInsertSizes)]*sql.Stmt
	ownDB   bool
}

func newSQLiteStore(ctx context.Context, db *sql.DB, ownDB bool) (*sqliteStore, error) {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return nil, fmt.Errorf("sqlusage: create schema: %w", err)
	}
	if err := migrateSQLite(ctx, db); err != nil {
		return nil, err
	}
	q := &sqliteStore{db: db, ownDB: ownDB}
	for i, n := range sqliteInsertSizes {
		stmt, err := db.PrepareContext(ctx, sqliteInsert(n))
		if err != nil {
			q.closeStatements()
			return nil, fmt.Errorf("sqlusage: prepare insert: %w", err)
		}
		q.inserts[i] = stmt
	}
	return q, nil
}

// write inserts rows in a single transaction: with SQLite the cost of a
// write is the commit (the WAL sync), then the statements, which insert
// up to 32 rows each.
func (q *sqliteStore) write(ctx context.Context, rows []billing.Usage) error {
	args := make([]any, 0, min(len(rows), sqliteInsertSizes[0])*sqliteColumns)
	if len(rows) == 1 {
		return q.exec(ctx, q.inserts[len(q.inserts)-1], rows, args)
	}
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for i, n := range sqliteInsertSizes {
		for len(rows) >= n {
			if err := q.exec(ctx, tx.StmtContext(ctx, q.inserts[i]), rows[:n], args); err != nil {
				tx.Rollback()
				return err
			}
			rows = rows[n:]
		}
	}
	return tx.Commit()
}

// exec runs stmt, an INSERT of len(rows) rows, binding their values
// through args' array.
func (q *sqliteStore) exec(ctx context.Context, stmt *sql.Stmt, rows []billing.Usage, args []any) error {
	args = args[:0]
	for _, u := range rows {
		var firstToken any // NULL when no output arrived
		if p := firstTokenMS(u); p != nil {
			firstToken = *p
		}
		args = append(args,
			u.RequestID, u.ResponseID, u.UserID, u.APIKeyID, u.GroupID, u.AccountID,
			u.Model, u.UpstreamModel, u.Transport, u.Stream, u.Turn, u.Status,
			u.InputTokens, u.CachedInputTokens, u.OutputTokens, u.ReasoningTokens, u.TotalTokens,
			u.ServiceTier, u.Attempts, firstToken, u.DurationMS, u.UserAgent, u.ClientIP,
			u.CreatedAt.UTC().Format(TimeFormat), u.CostMicros,
		)
	}
	_, err := stmt.ExecContext(ctx, args...)
	return err
}

func (q *sqliteStore) closeStatements() error {
	var err error
	for _, stmt := range q.inserts {
		if stmt != nil {
			err = errors.Join(err, stmt.Close())
		}
	}
	return err
}

func (q *sqliteStore) close() error {
	err := q.closeStatements()
	if q.ownDB {
		err = errors.Join(err, q.db.Close())
	}
	return err
}
