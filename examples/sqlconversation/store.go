// Package sqlconversation keeps the relay's conversation records
// (conversation.Store) in a SQL table: SQLite through database/sql and the
// pure-Go modernc.org/sqlite driver, or PostgreSQL through
// github.com/jackc/pgx/v5, as package sqlusage does for usage records.
//
//	convs, err := sqlconversation.Open(ctx, "sqlite", "conversations.db", nil) // or "postgres", "postgres://..."
//	if err != nil { ... }
//	defer convs.Close()
//	h := &relay.Handler{Scheduler: sched, Conversations: convs}
//
// # Table
//
// One row per served turn in conversation_records, keyed by (api_key_id,
// response_id): a response id is found only under the key that made it.
// record holds the relay's record (a JSON object) byte for byte (BLOB,
// BYTEA); the Store never parses it. stored_at is the time of the Put,
// expires_at that time plus the TTL; Get ignores expired rows.
//
// # Size
//
// The table has no byte cap: its size is bounded by the TTL. Expired rows
// are deleted by Put itself, at most CleanupLimit rows per call and at
// most once per CleanupInterval, unless the last cleanup found more than
// it could delete, so a backlog drains at up to CleanupLimit rows per Put.
// One Put at a time cleans up; the others do not wait for it. Plan for
// the rows of one TTL of traffic: turns per day × TTL in days × the mean
// record size (a few KiB to a few hundred KiB with long contexts).
//
// Records hold user content (prompts, answers, tool calls): the SQLite
// file and its side files are created 0600, and existing ones with wider
// modes are tightened on open.
package sqlconversation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/conversation"
)

// Drivers accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Options configure a Store. A nil *Options and zero fields take the
// defaults.
type Options struct {
	// TTL is how long a record is kept after its Put. 0: 24 h. A negative
	// TTL is refused: it is what bounds the table.
	TTL time.Duration
	// CleanupInterval is how often a Put deletes expired rows. 0: 1 min;
	// negative: never (call DeleteExpired yourself).
	CleanupInterval time.Duration
	// CleanupLimit bounds the rows one cleanup deletes, and so the time
	// it adds to a Put. 0: 100.
	CleanupLimit int
	// Now is the clock of expiry. nil: time.Now.
	Now func() time.Time
}

// Defaults of zero Options fields.
const (
	defaultTTL             = 24 * time.Hour
	defaultCleanupInterval = time.Minute
	defaultCleanupLimit    = 100
)

// backend is one database's statements.
type backend interface {
	get(ctx context.Context, apiKeyID, responseID string, now time.Time) ([]byte, error)
	put(ctx context.Context, apiKeyID, responseID string, record []byte, now, expires time.Time) error
	delete(ctx context.Context, apiKeyID, responseID string) error
	deleteExpired(ctx context.Context, now time.Time, limit int) (int64, error)
	close() error
}

// Store is a conversation.Store in a SQLite or PostgreSQL table. It is
// safe for concurrent use. Create one with Open, OpenSQLite or
// OpenPostgres (or NewSQLite, NewPostgres over a database you keep) and
// end it with Close.
type Store struct {
	driver string
	b      backend
	db     *sql.DB       // SQLite only
	pool   *pgxpool.Pool // PostgreSQL only
	ttl    time.Duration
	every  time.Duration
	limit  int
	now    func() time.Time

	cleaning    atomic.Bool  // a Put is cleaning up
	nextCleanup atomic.Int64 // unix ns; 0: at the next Put

	closeOnce sync.Once
	closeErr  error
}

var _ conversation.Store = (*Store)(nil)

func newStore(driver string, b backend, o *Options) (*Store, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	switch {
	case opt.TTL < 0:
		return nil, errors.New("sqlconversation: negative TTL; the TTL is what bounds the table")
	case opt.TTL == 0:
		opt.TTL = defaultTTL
	}
	if opt.CleanupInterval == 0 {
		opt.CleanupInterval = defaultCleanupInterval
	}
	if opt.CleanupLimit <= 0 {
		opt.CleanupLimit = defaultCleanupLimit
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Store{driver: driver, b: b, ttl: opt.TTL, every: opt.CleanupInterval, limit: opt.CleanupLimit, now: opt.Now}, nil
}

// Open opens a Store for driver: DriverSQLite ("sqlite", also for "") with
// OpenSQLite, or DriverPostgres ("postgres") with OpenPostgres.
func Open(ctx context.Context, driver, dsn string, o *Options) (*Store, error) {
	switch driver {
	case DriverSQLite, "":
		return OpenSQLite(ctx, dsn, o)
	case DriverPostgres:
		return OpenPostgres(ctx, dsn, o)
	default:
		return nil, fmt.Errorf("sqlconversation: unknown driver %q (want %q or %q)", driver, DriverSQLite, DriverPostgres)
	}
}

// Driver returns DriverSQLite or DriverPostgres.
func (s *Store) Driver() string { return s.driver }

// DB returns the SQLite database, for queries and reports; nil for
// PostgreSQL.
func (s *Store) DB() *sql.DB { return s.db }

// Pool returns the PostgreSQL pool, for queries and reports; nil for
// SQLite.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Get implements conversation.Store: it returns the record's bytes as Put
// stored them. An expired row is not found.
func (s *Store) Get(ctx context.Context, apiKeyID, responseID string) ([]byte, error) {
	r, err := s.b.get(ctx, apiKeyID, responseID, s.now())
	if err != nil && !errors.Is(err, conversation.ErrNotFound) {
		return nil, fmt.Errorf("sqlconversation: get: %w", err)
	}
	return r, err
}

// Put implements conversation.Store: it stores record until now plus the
// TTL, replacing any row of the same key and response id, and may then
// delete expired rows (see the package documentation).
func (s *Store) Put(ctx context.Context, apiKeyID, responseID string, record []byte) error {
	if record == nil {
		record = []byte{} // the column is NOT NULL; nil would bind as NULL
	}
	now := s.now()
	if err := s.b.put(ctx, apiKeyID, responseID, record, now, now.Add(s.ttl)); err != nil {
		return fmt.Errorf("sqlconversation: put: %w", err)
	}
	s.maybeCleanup(ctx, now)
	return nil
}

// Delete implements conversation.Store.
func (s *Store) Delete(ctx context.Context, apiKeyID, responseID string) error {
	if err := s.b.delete(ctx, apiKeyID, responseID); err != nil {
		return fmt.Errorf("sqlconversation: delete: %w", err)
	}
	return nil
}

// DeleteExpired deletes up to CleanupLimit expired rows and reports how
// many it deleted. Put calls it on its own; a host that turned that off
// (negative CleanupInterval) calls it from a job of its own.
func (s *Store) DeleteExpired(ctx context.Context) (int64, error) {
	n, err := s.b.deleteExpired(ctx, s.now(), s.limit)
	if err != nil {
		return n, fmt.Errorf("sqlconversation: delete expired rows: %w", err)
	}
	return n, nil
}

// maybeCleanup runs one bounded cleanup when it is due and no other Put is
// running one. A failed cleanup costs nothing but its retry: the rows stay
// invisible to Get and the next cleanup takes them.
func (s *Store) maybeCleanup(ctx context.Context, now time.Time) {
	if s.every < 0 || now.UnixNano() < s.nextCleanup.Load() || !s.cleaning.CompareAndSwap(false, true) {
		return
	}
	defer s.cleaning.Store(false)
	n, err := s.b.deleteExpired(ctx, now, s.limit)
	next := now.Add(s.every)
	if err == nil && n >= int64(s.limit) {
		next = now // more to delete: the next Put goes on
	}
	s.nextCleanup.Store(next.UnixNano())
}

// Close closes the database if the Store opened it. Calling it again
// returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.b.close() })
	return s.closeErr
}

// scanned turns a backend's read of one record into Get's answer: its
// driver's no-rows error is ErrNotFound, and an empty record is still a
// record.
func scanned(rec []byte, err, noRows error) ([]byte, error) {
	if errors.Is(err, noRows) {
		return nil, conversation.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if rec == nil {
		rec = []byte{}
	}
	return rec, nil
}
