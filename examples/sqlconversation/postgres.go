package sqlconversation

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/conversation"
	"github.com/relaykit/responsesrelay/examples/internal/pgpool"
)

// PostgresSchema creates the PostgreSQL conversation_records table and its
// expiry index in the first schema of the search_path. It is safe to run
// on every start.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS conversation_records (
	api_key_id  TEXT NOT NULL,
	response_id TEXT NOT NULL,
	record      BYTEA NOT NULL,
	stored_at   TIMESTAMPTZ NOT NULL,
	expires_at  TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (api_key_id, response_id)
);
CREATE INDEX IF NOT EXISTS conversation_records_expires ON conversation_records (expires_at);
`

// schemaLock names the lock serializing the schema creation of relays
// starting together (see pgpool.CreateSchema).
const schemaLock = "sqlconversation.conversation_records"

const (
	postgresGet = `SELECT record FROM conversation_records
	WHERE api_key_id = $1 AND response_id = $2 AND expires_at > $3`
	postgresPut = `INSERT INTO conversation_records (api_key_id, response_id, record, stored_at, expires_at)
	VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (api_key_id, response_id) DO UPDATE SET
	record = excluded.record, stored_at = excluded.stored_at, expires_at = excluded.expires_at`
	postgresDelete = `DELETE FROM conversation_records WHERE api_key_id = $1 AND response_id = $2`
	// SKIP LOCKED: relays cleaning up at once take different rows instead
	// of waiting on each other.
	postgresDeleteExpired = `DELETE FROM conversation_records WHERE (api_key_id, response_id) IN
	(SELECT api_key_id, response_id FROM conversation_records WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

// OpenPostgres connects a pgxpool to url (a postgres:// URL or a key=value
// DSN, as pgx accepts them), creates the table, and returns a Store over
// it. ctx bounds the connection and the schema creation. Close closes the
// pool.
func OpenPostgres(ctx context.Context, url string, o *Options) (*Store, error) {
	var s *Store
	_, err := pgpool.Open(ctx, url, "sqlconversation", func(pool *pgxpool.Pool) (err error) {
		s, err = newPostgres(ctx, pool, true, o)
		return err
	})
	return s, err
}

// NewPostgres creates the table through pool if needed and returns a Store
// over it; Close does not close pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, o *Options) (*Store, error) {
	return newPostgres(ctx, pool, false, o)
}

func newPostgres(ctx context.Context, pool *pgxpool.Pool, ownPool bool, o *Options) (*Store, error) {
	if err := pgpool.CreateSchema(ctx, pool, "sqlconversation", schemaLock, PostgresSchema); err != nil {
		return nil, err
	}
	s, err := newStore(DriverPostgres, &pgBackend{pool: pool, ownPool: ownPool}, o)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	return s, nil
}

type pgBackend struct {
	pool    *pgxpool.Pool
	ownPool bool
}

// pgStorable reports whether PostgreSQL text can hold s: it rejects NUL
// bytes and invalid UTF-8. A response id comes from the client, so a Get
// of one it cannot hold is an ordinary miss, not a database error.
func pgStorable(s string) bool { return utf8.ValidString(s) && !strings.Contains(s, "\x00") }

func (q *pgBackend) get(ctx context.Context, apiKeyID, responseID string, now time.Time) ([]byte, error) {
	if !pgStorable(apiKeyID) || !pgStorable(responseID) {
		return nil, conversation.ErrNotFound
	}
	var rec []byte
	err := q.pool.QueryRow(ctx, postgresGet, apiKeyID, responseID, now).Scan(&rec)
	return scanned(rec, err, pgx.ErrNoRows)
}

func (q *pgBackend) put(ctx context.Context, apiKeyID, responseID string, record []byte, now, expires time.Time) error {
	_, err := q.pool.Exec(ctx, postgresPut, apiKeyID, responseID, record, now, expires)
	return err
}

func (q *pgBackend) delete(ctx context.Context, apiKeyID, responseID string) error {
	if !pgStorable(apiKeyID) || !pgStorable(responseID) {
		return nil // no such row can exist
	}
	_, err := q.pool.Exec(ctx, postgresDelete, apiKeyID, responseID)
	return err
}

func (q *pgBackend) deleteExpired(ctx context.Context, now time.Time, limit int) (int64, error) {
	tag, err := q.pool.Exec(ctx, postgresDeleteExpired, now, limit)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q *pgBackend) close() error {
	if q.ownPool {
		q.pool.Close()
	}
	return nil
}
