package sqlusage

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/pgpool"
)

// PostgresSchema creates the PostgreSQL usage_records table and its index
// in the first schema of the search_path. It is safe to run on every
// start. A table an earlier version created lacks the columns added
// since; opening a Sink adds them.
const PostgresSchema = `
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
	stream              BOOLEAN NOT NULL DEFAULT false,
	turn                INTEGER NOT NULL DEFAULT 0,
	status              TEXT NOT NULL DEFAULT '',
	input_tokens        BIGINT NOT NULL DEFAULT 0,
	cached_input_tokens BIGINT NOT NULL DEFAULT 0,
	output_tokens       BIGINT NOT NULL DEFAULT 0,
	reasoning_tokens    BIGINT NOT NULL DEFAULT 0,
	total_tokens        BIGINT NOT NULL DEFAULT 0,
	service_tier        TEXT NOT NULL DEFAULT '',
	attempts            INTEGER NOT NULL DEFAULT 0,
	first_token_ms      BIGINT,
	duration_ms         BIGINT NOT NULL DEFAULT 0,
	user_agent          TEXT NOT NULL DEFAULT '',
	client_ip           TEXT NOT NULL DEFAULT '',
	created_at          TIMESTAMPTZ NOT NULL,
	cost_micros         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_records_user_created ON usage_records (user_id, created_at);
`

// schemaLock names the lock serializing the schema creation of relays
// starting together (see pgpool.CreateSchema).
const schemaLock = "sqlusage.usage_records"

// postgresInsert writes a whole batch as one statement: one array per
// column, unnested into rows. The text is the same for every batch size,
// so it is prepared once per connection, and a single statement commits
// atomically without BEGIN/COMMIT round trips. (pgx.Batch would execute N
// statements; COPY would need a temporary table and extra round trips to
// honor ON CONFLICT, worth it only for thousands of rows.)
const postgresInsert = `INSERT INTO usage_records (
	request_id, response_id, user_id, api_key_id, group_id, account_id,
	model, upstream_model, transport, stream, turn, status,
	input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens,
	service_tier, attempts, first_token_ms, duration_ms, user_agent, client_ip, created_at, cost_micros
)
SELECT * FROM unnest(
	$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
	$7::text[], $8::text[], $9::text[], $10::boolean[], $11::integer[], $12::text[],
	$13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[],
	$18::text[], $19::integer[], $20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::timestamptz[],
	$25::bigint[]
)
ON CONFLICT (request_id) DO NOTHING`

// OpenPostgres connects a pgxpool to url (a postgres:// URL or a key=value
// DSN, as pgx accepts them), creates the table, and returns a Sink over
// it. ctx bounds the connection and the schema creation. Shutting the Sink
// down closes the pool.
func OpenPostgres(ctx context.Context, url string, opts ...Option) (*Sink, error) {
	var s *Sink
	_, err := pgpool.Open(ctx, url, "sqlusage", func(pool *pgxpool.Pool) (err error) {
		s, err = newPostgres(ctx, pool, true, opts)
		return err
	})
	return s, err
}

// NewPostgres creates the table through pool if needed and returns a Sink
// over it; shutting the Sink down does not close pool.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Sink, error) {
	return newPostgres(ctx, pool, false, opts)
}

func newPostgres(ctx context.Context, pool *pgxpool.Pool, ownPool bool, opts []Option) (*Sink, error) {
	if err := pgpool.CreateSchema(ctx, pool, "sqlusage", schemaLock, PostgresSchema); err != nil {
		return nil, err
	}
	if err := migratePostgres(ctx, pool); err != nil {
		return nil, err
	}
	s := newSink(DriverPostgres, &pgStore{pool: pool, ownPool: ownPool}, newConfig(DefaultPostgresWriters, opts))
	s.pool = pool
	return s, nil
}

type pgStore struct {
	pool    *pgxpool.Pool
	ownPool bool
}

func (q *pgStore) write(ctx context.Context, rows []billing.Usage) error {
	n := len(rows)
	var (
		requestID, responseID, userID, apiKeyID = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		groupID, accountID, model, upModel      = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		transport, status, tier, ua, ip         = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		stream                                  = make([]bool, n)
		turn, attempts                          = make([]int64, n), make([]int64, n)
		in, cached, out, reasoning, total       = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		firstToken                              = make([]*int64, n)
		duration                                = make([]int64, n)
		created                                 = make([]time.Time, n)
		cost                                    = make([]int64, n)
	)
	for i, u := range rows {
		requestID[i], responseID[i], userID[i], apiKeyID[i] = pgText(u.RequestID), pgText(u.ResponseID), pgText(u.UserID), pgText(u.APIKeyID)
		groupID[i], accountID[i], model[i], upModel[i] = pgText(u.GroupID), pgText(u.AccountID), pgText(u.Model), pgText(u.UpstreamModel)
		transport[i], status[i], tier[i] = pgText(u.Transport), pgText(u.Status), pgText(u.ServiceTier)
		ua[i], ip[i] = pgText(u.UserAgent), pgText(u.ClientIP)
		stream[i] = u.Stream
		turn[i], attempts[i] = int64(u.Turn), int64(u.Attempts)
		in[i], cached[i], out[i], reasoning[i], total[i] = u.InputTokens, u.CachedInputTokens, u.OutputTokens, u.ReasoningTokens, u.TotalTokens
		firstToken[i] = firstTokenMS(u)
		duration[i] = u.DurationMS
		created[i] = u.CreatedAt
		cost[i] = u.CostMicros
	}
	_, err := q.pool.Exec(ctx, postgresInsert,
		requestID, responseID, userID, apiKeyID, groupID, accountID,
		model, upModel, transport, stream, turn, status,
		in, cached, out, reasoning, total,
		tier, attempts, firstToken, duration, ua, ip, created, cost)
	return err
}

// pgText makes s storable in a PostgreSQL text column, which rejects NUL
// bytes and invalid UTF-8: a user agent may carry either, and a record
// must not fail on it.
func pgText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func (q *pgStore) close() error {
	if q.ownPool {
		q.pool.Close()
	}
	return nil
}
