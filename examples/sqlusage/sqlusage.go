// Package sqlusage stores the relay's usage records in a SQLite table, one
// row per turn, through database/sql and the pure-Go modernc.org/sqlite
// driver (no cgo).
//
// A Sink writes synchronously; wrap it in billing.NewAsync so that the
// end of a turn never waits for the disk:
//
//	sink, err := sqlusage.OpenSQLite(ctx, "usage.db")
//	if err != nil { ... }
//	usage := billing.NewAsync(sink, billing.AsyncOptions{})
//	h := &relay.Handler{Scheduler: sched, Usage: usage}
//	...
//	usage.Close(ctx) // drain the queue first
//	sink.Close()
//
// Inserts are idempotent by request_id, so the retries of billing.Async
// never count a turn twice.
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
)

// Schema creates the usage_records table and its index. It is safe to run
// on every start.
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
	created_at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_user_created ON usage_records (user_id, created_at);
`

// TimeFormat is the layout of created_at: UTC, fixed width, so that text
// order is time order.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// BusyTimeout is how long a connection waits for another writer (for
// example a reporting job) before an insert fails and billing.Async retries.
const BusyTimeout = 5 * time.Second

const insertSQL = `INSERT OR IGNORE INTO usage_records (
	request_id, response_id, user_id, api_key_id, group_id, account_id,
	model, upstream_model, transport, stream, turn, status,
	input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens,
	service_tier, attempts, first_token_ms, duration_ms, user_agent, client_ip, created_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// Sink is a billing.UsageSink writing to usage_records. It is safe for
// concurrent use.
type Sink struct {
	db     *sql.DB
	insert *sql.Stmt
	ownDB  bool
}

// OpenSQLite opens (creating if needed) the SQLite database at dsn, a file
// path or a "file:" URI, switches it to WAL mode with a busy timeout, and
// creates the table. Close the Sink to close the database.
func OpenSQLite(ctx context.Context, dsn string) (*Sink, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("sqlusage: empty SQLite DSN")
	}
	db, err := sql.Open("sqlite", withPragmas(dsn))
	if err != nil {
		return nil, fmt.Errorf("sqlusage: open %s: %w", dsn, err)
	}
	// SQLite takes one writer at a time; a single connection queues the
	// inserts in-process instead of contending for the file lock, and keeps
	// ":memory:" databases usable.
	db.SetMaxOpenConns(1)
	s, err := New(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.ownDB = true
	return s, nil
}

// New creates the table in db if needed and returns a Sink over it. db
// must be a SQLite database; Close does not close it.
func New(ctx context.Context, db *sql.DB) (*Sink, error) {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return nil, fmt.Errorf("sqlusage: create schema: %w", err)
	}
	stmt, err := db.PrepareContext(ctx, insertSQL)
	if err != nil {
		return nil, fmt.Errorf("sqlusage: prepare insert: %w", err)
	}
	return &Sink{db: db, insert: stmt}, nil
}

// withPragmas adds a busy timeout and WAL mode to dsn unless it sets them.
// The driver runs _pragma parameters on every new connection, which is
// what busy_timeout needs.
func withPragmas(dsn string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	if !strings.Contains(dsn, "busy_timeout") {
		dsn += fmt.Sprintf("%s_pragma=busy_timeout(%d)", sep, BusyTimeout.Milliseconds())
		sep = "&"
	}
	if !strings.Contains(dsn, "journal_mode") {
		dsn += sep + "_pragma=journal_mode(WAL)"
	}
	return dsn
}

// DB returns the database, for queries and reports.
func (s *Sink) DB() *sql.DB { return s.db }

// Record inserts u. A record whose request_id is already stored is
// ignored, so retries are harmless.
func (s *Sink) Record(ctx context.Context, u billing.Usage) error {
	if u.RequestID == "" {
		// The primary key would make every later id-less record vanish.
		return errors.New("sqlusage: usage record without a request id")
	}
	var firstToken any // NULL when no output arrived
	if u.FirstTokenMS >= 0 {
		firstToken = u.FirstTokenMS
	}
	created := u.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	_, err := s.insert.ExecContext(ctx,
		u.RequestID, u.ResponseID, u.UserID, u.APIKeyID, u.GroupID, u.AccountID,
		u.Model, u.UpstreamModel, u.Transport, u.Stream, u.Turn, u.Status,
		u.InputTokens, u.CachedInputTokens, u.OutputTokens, u.ReasoningTokens, u.TotalTokens,
		u.ServiceTier, u.Attempts, firstToken, u.DurationMS, u.UserAgent, u.ClientIP,
		created.UTC().Format(TimeFormat),
	)
	if err != nil {
		return fmt.Errorf("sqlusage: insert %s: %w", u.RequestID, err)
	}
	return nil
}

// Close releases the prepared statement and, when the Sink opened the
// database itself, closes it.
func (s *Sink) Close() error {
	err := s.insert.Close()
	if s.ownDB {
		err = errors.Join(err, s.db.Close())
	}
	return err
}
