// Package sqlusage stores the relay's usage records in a SQL table, one row
// per turn: SQLite through database/sql and the pure-Go modernc.org/sqlite
// driver (no cgo), or PostgreSQL through github.com/jackc/pgx/v5.
//
// Wrap a Sink in billing.NewAsync so that the end of a turn never waits for
// the database:
//
//	sink, err := sqlusage.Open(ctx, "postgres", "postgres://...") // or "sqlite", "usage.db"
//	if err != nil { ... }
//	usage := billing.NewAsync(sink, billing.DeliveryOptions{Workers: 2})
//	h := &relay.Handler{Scheduler: sched, Usage: usage}
//	...
//	usage.Close(ctx)    // drain the queue first
//	sink.Shutdown(ctx)  // then flush the last batch and close the database
//
// # Idempotence
//
// request_id is the primary key and inserts ignore a request_id already
// stored (INSERT OR IGNORE / ON CONFLICT DO NOTHING), so the retries of
// billing.Async and the replays of a spool never count a turn twice. The
// first write of a request_id wins; a later one never overwrites it.
//
// # Batching
//
// A Sink is a billing.BatchSink: billing.NewAsync gathers the records
// queued together and hands them over in one RecordBatch call, which the
// Sink writes in one transaction, so an Async needs only a worker or two
// (one gathering while the other's batch is written).
//
// Record, for callers that deliver record by record (a billing.Spool
// hands over a record that has none waiting behind it), hands its record
// to a batcher and waits until the transaction holding it has committed:
// a nil error always means the row is stored, as billing.Async and a
// spool require. The batcher takes the first waiting record, adds those
// already waiting behind it (and, with WithMaxDelay, those arriving within
// that delay) up to WithMaxBatch records, and writes them in one
// transaction; records arriving meanwhile form the next batch.
// A batch therefore grows with the load without delaying a lone record.
// Every caller of a batch gets its outcome; when a batch fails while its
// context is still live, each caller's records are written again on their
// own, so that one record the database rejects fails alone. Only callers
// waiting at the same time can share a batch: give such a caller as many
// workers as the batch size to fill batches.
//
// SQLite writes a batch as one transaction of prepared inserts (the cost is
// the commit). PostgreSQL writes it as a single statement, INSERT ... SELECT
// FROM unnest of one array per column, so a batch is one round trip and
// one atomic commit whatever its size; text with NUL bytes or invalid
// UTF-8, which PostgreSQL rejects, is stored with U+FFFD in their place.
package sqlusage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/billing"
)

// Drivers accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Defaults of the options.
const (
	DefaultMaxBatch     = 128
	DefaultWriteTimeout = 10 * time.Second
	// DefaultPostgresWriters lets a few batches travel to the server at
	// once; SQLite takes one writer at a time, so its default is 1.
	DefaultPostgresWriters = 4
)

// ErrClosed is returned by Record after Shutdown or Close began.
var ErrClosed = errors.New("sqlusage: sink closed")

// An Option tunes a Sink.
type Option func(*config)

type config struct {
	maxBatch     int
	maxDelay     time.Duration
	writeTimeout time.Duration
	writers      int
}

// WithMaxBatch sets how many records one transaction holds at most, of
// those Record hands over; a RecordBatch's are written together whatever
// their number. n <= 0: DefaultMaxBatch.
func WithMaxBatch(n int) Option { return func(c *config) { c.maxBatch = n } }

// WithMaxDelay lets a batch of Record's records wait up to d for more
// before it is written, which trades latency for larger batches; a batch
// holding a RecordBatch's records does not wait. 0 (the default): write
// as soon as the writer is free.
func WithMaxDelay(d time.Duration) Option { return func(c *config) { c.maxDelay = d } }

// WithWriteTimeout bounds one batch write when some of its callers have no
// deadline of their own. d <= 0: DefaultWriteTimeout.
func WithWriteTimeout(d time.Duration) Option { return func(c *config) { c.writeTimeout = d } }

// WithWriters sets how many batches are written at once. n <= 0: 1 for
// SQLite, DefaultPostgresWriters for PostgreSQL.
func WithWriters(n int) Option { return func(c *config) { c.writers = n } }

func newConfig(defaultWriters int, opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.maxBatch <= 0 {
		c.maxBatch = DefaultMaxBatch
	}
	if c.maxDelay < 0 {
		c.maxDelay = 0
	}
	if c.writeTimeout <= 0 {
		c.writeTimeout = DefaultWriteTimeout
	}
	if c.writers <= 0 {
		c.writers = defaultWriters
	}
	return c
}

// store is what a database offers the batcher.
type store interface {
	// write stores rows (distinct request_ids, sorted) atomically,
	// ignoring those already stored.
	write(ctx context.Context, rows []billing.Usage) error
	close() error
}

// Sink is a billing.UsageSink writing to the usage_records table of a
// SQLite or PostgreSQL database, in batches. It is safe for concurrent
// use. Create one with Open, OpenSQLite, New, OpenPostgres or NewPostgres,
// and end it with Shutdown or Close.
type Sink struct {
	driver string
	store  store
	db     *sql.DB       // SQLite only
	pool   *pgxpool.Pool // PostgreSQL only
	cfg    config

	reqs chan *request

	// mu orders Record's sends against Shutdown closing reqs.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{} // closed first by Shutdown: senders stop waiting

	base  context.Context // the writers'; cancelled when Shutdown gives up
	abort context.CancelCauseFunc
	done  chan struct{} // closed when every writer has returned

	closeOnce sync.Once
	storeOnce sync.Once
	storeErr  error

	writes    atomic.Int64   // store.write calls, for tests
	onEnqueue func()         // test hook: a record reached the batcher
	onWrite   func(rows int) // test hook: a write is about to start
}

// request is one caller's records on their way to the writer: Record's
// one (u), or a RecordBatch's copy (us, not nil).
type request struct {
	ctx  context.Context
	u    billing.Usage
	us   []billing.Usage
	done chan error // buffered: the writer never waits for a caller that left
}

// rows is how many records r holds.
func (r *request) rows() int {
	if r.us != nil {
		return len(r.us)
	}
	return 1
}

// name names r's records in errors.
func (r *request) name() string {
	if r.us != nil {
		return fmt.Sprintf("batch of %d records", len(r.us))
	}
	return "record " + r.u.RequestID
}

func newSink(driver string, st store, cfg config) *Sink {
	s := &Sink{
		driver:  driver,
		store:   st,
		cfg:     cfg,
		reqs:    make(chan *request, cfg.maxBatch),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.base, s.abort = context.WithCancelCause(context.Background())
	var writers sync.WaitGroup
	for range cfg.writers {
		writers.Go(s.run)
	}
	go func() {
		writers.Wait()
		close(s.done)
	}()
	return s
}

// Open opens a Sink for driver, DriverSQLite ("sqlite", also for "") with
// OpenSQLite or DriverPostgres ("postgres") with OpenPostgres.
func Open(ctx context.Context, driver, dsn string, opts ...Option) (*Sink, error) {
	switch driver {
	case DriverSQLite, "":
		return OpenSQLite(ctx, dsn, opts...)
	case DriverPostgres:
		return OpenPostgres(ctx, dsn, opts...)
	default:
		return nil, fmt.Errorf("sqlusage: unknown driver %q (want %q or %q)", driver, DriverSQLite, DriverPostgres)
	}
}

// Driver returns DriverSQLite or DriverPostgres.
func (s *Sink) Driver() string { return s.driver }

// DB returns the SQLite database, for queries and reports; nil for
// PostgreSQL.
func (s *Sink) DB() *sql.DB { return s.db }

// Pool returns the PostgreSQL pool, for queries and reports; nil for
// SQLite.
func (s *Sink) Pool() *pgxpool.Pool { return s.pool }

// Record stores u and returns nil once the transaction holding it has
// committed. A record whose request_id is already stored is ignored, so
// retries are harmless. When ctx ends first, Record returns an error and
// the record may or may not be stored; a retry settles it.
func (s *Sink) Record(ctx context.Context, u billing.Usage) error {
	if u.RequestID == "" {
		// The primary key would make every later id-less record vanish.
		return errors.New("sqlusage: usage record without a request id")
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now()
	}
	return s.submit(&request{ctx: ctx, u: u, done: make(chan error, 1)})
}

// RecordBatch stores us in one transaction and returns nil once it has
// committed (billing.BatchSink). The transaction holds all of us, whatever
// WithMaxBatch, and maybe records Record handed over meanwhile; it is
// written as soon as a writer is free, without the WithMaxDelay wait
// (whoever gathered us has waited already). Request ids already stored, or
// repeated within us, are ignored as by Record: the first write of an id
// wins. When the transaction fails, or ctx ends first, RecordBatch returns
// an error and none of us is known to be stored: the caller delivers them
// again, as a batch or one by one.
func (s *Sink) RecordBatch(ctx context.Context, us []billing.Usage) error {
	if len(us) == 0 {
		return nil
	}
	// A copy: the caller reuses us once RecordBatch returns, which can be
	// before the writer is done with it (when ctx ends).
	rows := slices.Clone(us)
	var now time.Time
	for i := range rows {
		if rows[i].RequestID == "" {
			return fmt.Errorf("sqlusage: usage record without a request id (record %d of a batch of %d)", i, len(rows))
		}
		if rows[i].CreatedAt.IsZero() {
			if now.IsZero() {
				now = time.Now()
			}
			rows[i].CreatedAt = now
		}
	}
	return s.submit(&request{ctx: ctx, us: rows, done: make(chan error, 1)})
}

// submit hands r to the writer and waits for its outcome or the end of
// its context.
func (s *Sink) submit(r *request) error {
	ctx := r.ctx
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlusage: %s: %w", r.name(), err)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("sqlusage: %s: %w", r.name(), ErrClosed)
	}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return fmt.Errorf("sqlusage: %s not queued: %w", r.name(), ctx.Err())
	case <-s.closing:
		s.mu.RUnlock()
		return fmt.Errorf("sqlusage: %s: %w", r.name(), ErrClosed)
	}
	s.mu.RUnlock()
	if s.onEnqueue != nil {
		s.onEnqueue()
	}

	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("sqlusage: %s not known to be stored: %w", r.name(), ctx.Err())
	}
}

// Shutdown stops taking records (Record then returns ErrClosed), writes
// those already handed to the batcher, waits for the writers and closes
// the database if the Sink opened it. When ctx ends first, the writes in
// progress are cancelled, their callers get errors, and Shutdown returns
// ctx.Err() once the writers have stopped. Calling it again waits again.
func (s *Sink) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.closing) // senders blocked on a full queue give up
		s.mu.Lock()
		s.closed = true
		close(s.reqs)
		s.mu.Unlock()
	})
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		err = ctx.Err()
		s.abort(fmt.Errorf("sqlusage: shutdown gave up: %w", err))
		<-s.done // writes honor their context, so this is short
	}
	s.storeOnce.Do(func() { s.storeErr = s.store.close() })
	return errors.Join(err, s.storeErr)
}

// Close is Shutdown without a deadline: each write still ends within the
// write timeout.
func (s *Sink) Close() error { return s.Shutdown(context.Background()) }

// run is one writer: it takes a batch, writes it, and answers its callers,
// until reqs is closed and empty.
func (s *Sink) run() {
	batch := make([]*request, 0, s.cfg.maxBatch)
	for first := range s.reqs {
		batch = s.fill(append(batch, first))
		s.flush(batch)
		clear(batch) // let the records go
		batch = batch[:0]
	}
}

// fill adds to batch the requests already waiting and, with a max delay,
// those arriving within it, up to the batch size in records. A batch
// holding a RecordBatch's records waits for no more.
func (s *Sink) fill(batch []*request) []*request {
	rows := batch[0].rows()
	var deadline <-chan time.Time
	if s.cfg.maxDelay > 0 && batch[0].us == nil {
		t := time.NewTimer(s.cfg.maxDelay)
		defer t.Stop()
		deadline = t.C
	}
	add := func(r *request) {
		batch = append(batch, r)
		rows += r.rows()
		if r.us != nil {
			deadline = nil
		}
	}
	for rows < s.cfg.maxBatch {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			add(r)
			continue
		default:
		}
		if deadline == nil {
			return batch
		}
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			add(r)
		case <-deadline:
			return batch
		case <-s.base.Done():
			return batch
		}
	}
	return batch
}

// flush writes the records of batch whose callers still wait and answers
// each of them.
func (s *Sink) flush(batch []*request) {
	live := make([]*request, 0, len(batch))
	for _, r := range batch {
		if r.ctx.Err() != nil {
			continue // its caller already returned an error
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := s.writeContext(live)
	defer cancel()

	errs := make([]error, len(live))
	if err := s.write(ctx, distinctSorted(live)); err != nil {
		if len(live) == 1 || ctx.Err() != nil {
			for i := range live {
				errs[i] = err
			}
		} else {
			// Find the caller whose record the database rejects instead
			// of failing every caller that shared the transaction: each
			// one's records alone (a RecordBatch's still together).
			for i := range live {
				errs[i] = s.write(ctx, distinctSorted(live[i:i+1]))
			}
		}
	}
	for i, r := range live {
		var err error
		if errs[i] != nil {
			err = fmt.Errorf("sqlusage: insert %s: %w", r.name(), errs[i])
		}
		r.done <- err
	}
}

func (s *Sink) write(ctx context.Context, rows []billing.Usage) (err error) {
	// A panic here would end the process and the records queued in
	// billing.Async with it; its callers get an error instead. A
	// transaction left open is rolled back when ctx is cancelled.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sqlusage: write panicked: %v", p)
		}
	}()
	s.writes.Add(1)
	if s.onWrite != nil {
		s.onWrite(len(rows))
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	return s.store.write(ctx, rows)
}

// writeContext bounds a batch write by the latest deadline of its callers
// (no caller waits longer) and by the write timeout, and ends it when
// Shutdown gives up.
func (s *Sink) writeContext(batch []*request) (context.Context, context.CancelFunc) {
	limit := time.Now().Add(s.cfg.writeTimeout)
	var latest time.Time
	for _, r := range batch {
		d, ok := r.ctx.Deadline()
		if !ok {
			latest = limit
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	if latest.After(limit) {
		latest = limit
	}
	return context.WithDeadline(s.base, latest)
}

// distinctSorted returns the records of batch, one per request_id (the
// first in batch order), in request_id order: a fixed order makes
// concurrent PostgreSQL batches take their row locks in the same order, so
// they cannot deadlock.
func distinctSorted(batch []*request) []billing.Usage {
	n := 0
	for _, r := range batch {
		n += r.rows()
	}
	rows := make([]billing.Usage, 0, n)
	for _, r := range batch {
		if r.us != nil {
			rows = append(rows, r.us...)
		} else {
			rows = append(rows, r.u)
		}
	}
	slices.SortStableFunc(rows, func(a, b billing.Usage) int { return strings.Compare(a.RequestID, b.RequestID) })
	return slices.CompactFunc(rows, func(a, b billing.Usage) bool { return a.RequestID == b.RequestID })
}

// firstTokenMS is NULL when no output arrived.
func firstTokenMS(u billing.Usage) *int64 {
	if u.FirstTokenMS < 0 {
		return nil
	}
	return &u.FirstTokenMS
}

var _ billing.BatchSink = (*Sink)(nil)
