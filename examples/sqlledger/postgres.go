package sqlledger

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/examples/internal/pgpool"
)

// PostgresSchema creates the PostgreSQL tables and indexes in the first
// schema of the search_path. It is safe to run on every start.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS ledger_spend (
	scope    TEXT NOT NULL,
	scope_id TEXT NOT NULL,
	period   TEXT NOT NULL,
	micros   BIGINT NOT NULL,
	PRIMARY KEY (scope, scope_id, period)
);
CREATE TABLE IF NOT EXISTS ledger_rates (
	scope    TEXT NOT NULL,
	scope_id TEXT NOT NULL,
	minute   BIGINT NOT NULL,
	requests BIGINT NOT NULL,
	tokens   BIGINT NOT NULL,
	PRIMARY KEY (scope, scope_id)
);
CREATE TABLE IF NOT EXISTS ledger_holds (
	request_id TEXT PRIMARY KEY,
	api_key_id TEXT,
	user_id    TEXT,
	micros     BIGINT NOT NULL,
	tokens     BIGINT NOT NULL,
	minute     BIGINT NOT NULL,
	created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_holds_key ON ledger_holds (api_key_id, created_ms);
CREATE INDEX IF NOT EXISTS ledger_holds_user ON ledger_holds (user_id, created_ms);
CREATE INDEX IF NOT EXISTS ledger_holds_created ON ledger_holds (created_ms);
CREATE TABLE IF NOT EXISTS ledger_settled (
	request_id TEXT PRIMARY KEY,
	settled_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_settled_at ON ledger_settled (settled_ms);
`

// schemaLock names the lock serializing the schema creation of relays
// starting together (see pgpool.CreateSchema).
const schemaLock = "sqlledger.ledger"

// SKIP LOCKED: relays cleaning up at once take different rows instead of
// waiting on each other.
var postgresDialect = dialect{
	correctTokens: `UPDATE ledger_rates SET tokens = GREATEST(tokens + $4, 0) WHERE scope = $1 AND scope_id = $2 AND minute = $3`,
	deleteHolds: `DELETE FROM ledger_holds WHERE request_id IN
	(SELECT request_id FROM ledger_holds WHERE created_ms <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
	deleteSettled: `DELETE FROM ledger_settled WHERE request_id IN
	(SELECT request_id FROM ledger_settled WHERE settled_ms <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
}

// OpenPostgres connects a pgxpool to url (a postgres:// URL or a key=value
// DSN, as pgx accepts them), creates the tables, and returns a Ledger over
// it. ctx bounds the connection and the schema creation. Close closes the
// pool.
func OpenPostgres(ctx context.Context, url string, o *Options) (*Ledger, error) {
	var l *Ledger
	_, err := pgpool.Open(ctx, url, "sqlledger", func(pool *pgxpool.Pool) (err error) {
		l, err = newPostgres(ctx, pool, true, o)
		return err
	})
	return l, err
}

// NewPostgres creates the tables through pool if needed and returns a
// Ledger over it; Close does not close pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, o *Options) (*Ledger, error) {
	return newPostgres(ctx, pool, false, o)
}

func newPostgres(ctx context.Context, pool *pgxpool.Pool, ownPool bool, o *Options) (*Ledger, error) {
	if err := pgpool.CreateSchema(ctx, pool, "sqlledger", schemaLock, PostgresSchema); err != nil {
		return nil, err
	}
	l := newLedger(DriverPostgres, &pgBackend{pool: pool, ownPool: ownPool}, o)
	l.pool = pool
	return l, nil
}

type pgBackend struct {
	pool    *pgxpool.Pool
	ownPool bool
}

type pgQ struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

func (p pgQ) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := p.q.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (p pgQ) row(ctx context.Context, query string, args ...any) scanner {
	return p.q.QueryRow(ctx, query, args...)
}

// inTx runs f in a READ COMMITTED transaction: f's statements lock the
// rows that order it against other holds (see the package documentation).
func (b *pgBackend) inTx(ctx context.Context, f func(q querier) error) error {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // after Commit: a no-op
	if err := f(pgQ{tx}); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	return tx.Commit(cctx)
}

func (b *pgBackend) plain() querier { return pgQ{b.pool} }

func (b *pgBackend) noRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// text replaces what PostgreSQL text cannot hold (NUL, invalid UTF-8)
// with U+FFFD, the same way in every call, so that an id always names the
// same rows.
func (b *pgBackend) text(s string) string {
	if strings.ContainsRune(s, 0) {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func (b *pgBackend) dialect() dialect { return postgresDialect }

func (b *pgBackend) close() error {
	if b.ownPool {
		b.pool.Close()
	}
	return nil
}
