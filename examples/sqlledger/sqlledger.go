// Package sqlledger keeps the relay's money and rate limits in flight (a
// billing.Ledger) in SQL tables: SQLite through database/sql and the
// pure-Go modernc.org/sqlite driver, or PostgreSQL through
// github.com/jackc/pgx/v5, as packages sqlusage and sqlconversation do.
// Relays sharing a PostgreSQL database share one budget and one rate
// limit per API key and per user; a SQLite file serves the relays of one
// host.
//
//	ledger, err := sqlledger.Open(ctx, "postgres", "postgres://...", nil) // or "sqlite", "ledger.db"
//	if err != nil { ... }
//	defer ledger.Close()
//	usage, err := billing.OpenSpool(dir, billing.Settling(ledger, sink), billing.DeliveryOptions{})
//	h := &relay.Handler{Ledger: ledger, Usage: usage /* , ... */}
//
// # Tables
//
//	ledger_spend    (scope, scope_id, period) -> micros: what a key ("key")
//	                or a user ("user") spent in "total", a UTC day
//	                ("2026-12-04") or month ("2026-12")
//	ledger_rates    (scope, scope_id) -> minute, requests, tokens: the
//	                current UTC minute's counts; one row per scope, which
//	                is also the row a Hold locks
//	ledger_holds    request_id -> api_key_id, user_id (NULL: no such
//	                scope), micros, tokens, minute, created_ms
//	ledger_settled  request_id -> settled_ms
//
// Times are Unix milliseconds and minutes are Unix minutes, integers in
// both databases. Spend rows are kept (a scope gains a day row per day it
// spends); holds and settled ids are deleted once expired, a bounded batch
// at a time after a Hold, at most once per CleanupInterval.
//
// # Transactions
//
// A Hold is one transaction that first takes its scopes' rows of
// ledger_rates (key first, then user: one order everywhere, so two holds
// never wait on each other in a cycle), then checks and counts. SQLite
// starts it with BEGIN IMMEDIATE, which takes the database's write lock at
// once: two holds can never both read and then both write. PostgreSQL
// runs it at READ COMMITTED and locks the rows with INSERT ... ON CONFLICT
// DO UPDATE (a row lock until commit): the holds of one scope follow one
// another, those of different scopes run side by side, and none is ever
// retried. What a scope spent and holds is read in one statement, so one
// snapshot: a Settle committing meanwhile (it moves a turn's money from
// held to spent and takes no scope lock for that) can only change the sum
// by that turn's overrun, which the Ledger contract allows.
//
// A Settle is one transaction: it marks its id settled (INSERT ... ON
// CONFLICT DO NOTHING: a second Settle finds the mark and does nothing),
// deletes the hold, adds the cost to the spend rows of its key and user
// in every window, and corrects the hold's minute to the turn's tokens.
// Release is one DELETE.
package sqlledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/internal/ledgerkit"
)

// Drivers accepted by Open.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Options configure a Ledger. A nil *Options and zero fields take the
// defaults.
type Options struct {
	// HoldTTL is how long a hold counts when its turn never ends (its
	// process was killed): a hold made at a turn's start
	// (billing.Request.Now) no longer counts for turns that start HoldTTL
	// later. 0: 1 h.
	HoldTTL time.Duration
	// SettledTTL is how long a settled request id is remembered, so that
	// a record replayed within it is not debited twice. Cover the longest
	// a spool can hold a record. 0: 24 h.
	SettledTTL time.Duration
	// CleanupInterval is how often a Hold deletes expired holds and
	// settled ids. 0: 1 min; negative: never (call DeleteExpired).
	CleanupInterval time.Duration
	// CleanupLimit bounds the rows of each table one cleanup deletes. 0:
	// 1000.
	CleanupLimit int
	// Now is the clock of settled ids and cleanups, and of a Request
	// without Now, a Usage without CreatedAt and a Balance at the zero
	// time. nil: time.Now.
	Now func() time.Time
}

const (
	defaultCleanupInterval = time.Minute
	defaultCleanupLimit    = 1000
	// commitTimeout bounds a commit, which runs even when the caller's
	// context ended: a Hold whose commit was cut could stand counted
	// while its caller thinks it failed.
	commitTimeout = 10 * time.Second
)

// querier runs statements, in a transaction or not.
type querier interface {
	exec(ctx context.Context, query string, args ...any) (int64, error)
	row(ctx context.Context, query string, args ...any) scanner
}

type scanner interface{ Scan(dest ...any) error }

// backend is one database.
type backend interface {
	// inTx runs f in one transaction that excludes other Holds and
	// Settles of the scopes f locks (see the package documentation).
	inTx(ctx context.Context, f func(q querier) error) error
	plain() querier
	noRows(err error) bool
	// text makes an id storable (PostgreSQL refuses NUL and invalid
	// UTF-8).
	text(s string) string
	dialect() dialect
	close() error
}

// dialect holds the statements whose spelling differs.
type dialect struct {
	correctTokens string // $1 scope, $2 id, $3 minute, $4 delta
	deleteHolds   string // created_ms <= $1, at most $2
	deleteSettled string // settled_ms <= $1, at most $2
}

// Ledger is a billing.Ledger in SQLite or PostgreSQL tables (see the
// package documentation). It is safe for concurrent use. Create one with
// Open, OpenSQLite or OpenPostgres (or NewSQLite, NewPostgres over a
// database you keep) and end it with Close.
//
// It admits, refuses and answers as billing's MemoryLedger does: per scope
// (the key's, then the user's limits), requests and tokens in the UTC
// minute of Request.Now against RPM and TPM (429 rate_limit_exceeded of
// type "requests" or "tokens", Retry-After to the next minute), then the
// spend of the budget window of Request.Now plus every hold in flight plus
// this one against BudgetMicros (the zero billing.Denial, 429
// insufficient_quota). A refused hold counts nothing; a second Hold of an
// id counts nothing more. Settle debits Usage.CostMicros in every window
// of Usage.CreatedAt, once per request id, even without a hold.
type Ledger struct {
	driver     string
	b          backend
	d          dialect
	db         *sql.DB       // SQLite only
	pool       *pgxpool.Pool // PostgreSQL only
	holdTTL    time.Duration
	settledTTL time.Duration
	every      time.Duration
	limit      int
	now        func() time.Time

	cleaning    atomic.Bool
	nextCleanup atomic.Int64 // unix ns of the clock; 0: at the next Hold

	closed atomic.Bool
}

var _ billing.Ledger = (*Ledger)(nil)

func newLedger(driver string, b backend, o *Options) *Ledger {
	var opt Options
	if o != nil {
		opt = *o
	}
	if opt.HoldTTL <= 0 {
		opt.HoldTTL = ledgerkit.HoldTTL
	}
	if opt.SettledTTL <= 0 {
		opt.SettledTTL = ledgerkit.SettledTTL
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
	return &Ledger{driver: driver, b: b, d: b.dialect(), holdTTL: opt.HoldTTL, settledTTL: opt.SettledTTL,
		every: opt.CleanupInterval, limit: opt.CleanupLimit, now: opt.Now}
}

// Open opens a Ledger for driver: DriverSQLite ("sqlite", also for "")
// with OpenSQLite, or DriverPostgres ("postgres") with OpenPostgres.
func Open(ctx context.Context, driver, dsn string, o *Options) (*Ledger, error) {
	switch driver {
	case DriverSQLite, "":
		return OpenSQLite(ctx, dsn, o)
	case DriverPostgres:
		return OpenPostgres(ctx, dsn, o)
	default:
		return nil, fmt.Errorf("sqlledger: unknown driver %q (want %q or %q)", driver, DriverSQLite, DriverPostgres)
	}
}

// Driver returns DriverSQLite or DriverPostgres.
func (l *Ledger) Driver() string { return l.driver }

// DB returns the SQLite database, for reports; nil for PostgreSQL.
func (l *Ledger) DB() *sql.DB { return l.db }

// Pool returns the PostgreSQL pool, for reports; nil for SQLite.
func (l *Ledger) Pool() *pgxpool.Pool { return l.pool }

// Close closes the database if the Ledger opened it. Calling it again
// does nothing.
func (l *Ledger) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.b.close()
}

// Statements both databases accept ($n placeholders: SQLite takes them
// too).
const (
	// lockRate takes the scope's row (creating it) until the transaction
	// ends and returns its counts.
	lockRate = `INSERT INTO ledger_rates (scope, scope_id, minute, requests, tokens) VALUES ($1, $2, $3, 0, 0)
	ON CONFLICT (scope, scope_id) DO UPDATE SET minute = ledger_rates.minute
	RETURNING minute, requests, tokens`
	setRate = `UPDATE ledger_rates SET minute = $3, requests = $4, tokens = $5 WHERE scope = $1 AND scope_id = $2`
	// holdState: 2 the id is held (live) or settled, 1 it has an expired
	// hold, 0 it is new.
	holdState = `SELECT CASE
	WHEN EXISTS (SELECT 1 FROM ledger_settled WHERE request_id = $1) THEN 2
	WHEN EXISTS (SELECT 1 FROM ledger_holds WHERE request_id = $1 AND created_ms > $2) THEN 2
	WHEN EXISTS (SELECT 1 FROM ledger_holds WHERE request_id = $1) THEN 1
	ELSE 0 END`
	deleteHold = `DELETE FROM ledger_holds WHERE request_id = $1`
	insertHold = `INSERT INTO ledger_holds (request_id, api_key_id, user_id, micros, tokens, minute, created_ms)
	VALUES ($1, $2, $3, $4, $5, $6, $7)`
	// spentHeld* read a scope's spend in a window and its live holds in
	// one statement, so from one snapshot.
	spentHeldKey = `SELECT
	CAST(COALESCE((SELECT micros FROM ledger_spend WHERE scope = 'key' AND scope_id = $1 AND period = $2), 0) AS BIGINT),
	CAST(COALESCE((SELECT sum(micros) FROM ledger_holds WHERE api_key_id = $1 AND created_ms > $3), 0) AS BIGINT),
	(SELECT count(*) FROM ledger_holds WHERE api_key_id = $1 AND created_ms > $3)`
	spentHeldUser = `SELECT
	CAST(COALESCE((SELECT micros FROM ledger_spend WHERE scope = 'user' AND scope_id = $1 AND period = $2), 0) AS BIGINT),
	CAST(COALESCE((SELECT sum(micros) FROM ledger_holds WHERE user_id = $1 AND created_ms > $3), 0) AS BIGINT),
	(SELECT count(*) FROM ledger_holds WHERE user_id = $1 AND created_ms > $3)`
	markSettled = `INSERT INTO ledger_settled (request_id, settled_ms) VALUES ($1, $2) ON CONFLICT (request_id) DO NOTHING`
	takeHold    = `DELETE FROM ledger_holds WHERE request_id = $1 RETURNING api_key_id, user_id, tokens, minute`
	readRate    = `SELECT minute, requests, tokens FROM ledger_rates WHERE scope = $1 AND scope_id = $2`
)

// debitSQL adds $4 to the spend of the windows of n scopes: rows ($1, $2,
// $3), ($5, $6, $7)... in one statement.
func debitSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ledger_spend (scope, scope_id, period, micros) VALUES `)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d)", 3*i+2, 3*i+3, 3*i+4, 1)
	}
	b.WriteString(` ON CONFLICT (scope, scope_id, period) DO UPDATE SET micros = ledger_spend.micros + excluded.micros`)
	return b.String()
}

// The debit statements of one scope's three windows and of two scopes'.
var debitOne, debitTwo = debitSQL(3), debitSQL(6)

var errNoRequestID = errors.New("sqlledger: a hold needs a request id")

// errDenied ends a Hold's transaction without a commit.
var errDenied = errors.New("sqlledger: denied")

// scopeState is what a Hold knows of one scope.
type scopeState struct {
	minute, requests, tokens int64
	spent, held              int64
}

// Hold implements billing.Ledger: one transaction.
func (l *Ledger) Hold(ctx context.Context, q billing.Request) (billing.Remaining, error) {
	if q.RequestID == "" {
		return billing.Remaining{}, errNoRequestID
	}
	now := q.Now
	if now.IsZero() {
		now = l.now()
	}
	scopes := ledgerkit.RequestScopes(q)
	for i := range scopes {
		scopes[i].ID = l.b.text(scopes[i].ID)
	}
	id := l.b.text(q.RequestID)
	minute, nowMS := ledgerkit.Minute(now), now.UnixMilli()
	cutoff := nowMS - l.holdTTL.Milliseconds()
	micros, tokens := ledgerkit.Amount(q.HoldMicros), ledgerkit.Amount(q.HoldTokens)

	var left billing.Remaining
	var denial *billing.Denial
	err := l.b.inTx(ctx, func(db querier) error {
		st := make([]scopeState, len(scopes))
		for i, s := range scopes {
			c := &st[i]
			if err := db.row(ctx, lockRate, s.Kind, s.ID, minute).Scan(&c.minute, &c.requests, &c.tokens); err != nil {
				return err
			}
			if c.minute < minute {
				c.minute, c.requests, c.tokens = minute, 0, 0
			}
		}
		var known int
		if err := db.row(ctx, holdState, id, cutoff).Scan(&known); err != nil {
			return err
		}
		for i, s := range scopes {
			if s.Limits.BudgetMicros > 0 {
				var n int64
				if err := db.row(ctx, spentHeldSQL(s.Kind), s.ID, billing.PeriodKey(s.Limits.Period, now), cutoff).
					Scan(&st[i].spent, &st[i].held, &n); err != nil {
					return err
				}
			}
		}
		switch known {
		case 2:
			left = remaining(scopes, st)
			return nil
		case 1: // an expired hold of the same id
			if _, err := db.exec(ctx, deleteHold, id); err != nil {
				return err
			}
		}
		if denial = check(scopes, st, micros, tokens, now); denial != nil {
			return errDenied
		}
		var keyID, userID any
		for i, s := range scopes {
			c := &st[i]
			c.requests++
			c.tokens += tokens
			c.held += micros
			if _, err := db.exec(ctx, setRate, s.Kind, s.ID, c.minute, c.requests, c.tokens); err != nil {
				return err
			}
			if s.Kind == ledgerkit.Key {
				keyID = s.ID
			} else {
				userID = s.ID
			}
		}
		if _, err := db.exec(ctx, insertHold, id, keyID, userID, micros, tokens, minute, nowMS); err != nil {
			return err
		}
		left = remaining(scopes, st)
		return nil
	})
	if denial != nil {
		return billing.Remaining{}, denial
	}
	if err != nil {
		return billing.Remaining{}, fmt.Errorf("sqlledger: hold: %w", err)
	}
	l.maybeCleanup(ctx, cutoff)
	return left, nil
}

func spentHeldSQL(kind string) string {
	if kind == ledgerkit.Key {
		return spentHeldKey
	}
	return spentHeldUser
}

// check applies the limits in their order: every scope's RPM, then TPM,
// then budget.
func check(scopes []ledgerkit.Scope, st []scopeState, micros, tokens int64, now time.Time) *billing.Denial {
	for i, s := range scopes {
		if s.Limits.RPM > 0 && st[i].requests+1 > s.Limits.RPM {
			return ledgerkit.RequestsDenial(s, st[i].requests, now)
		}
	}
	for i, s := range scopes {
		if s.Limits.TPM > 0 && st[i].tokens+tokens > s.Limits.TPM {
			return ledgerkit.TokensDenial(s, st[i].tokens, tokens, now)
		}
	}
	for i, s := range scopes {
		if b := s.Limits.BudgetMicros; b > 0 && st[i].spent+st[i].held+micros > b {
			return ledgerkit.BudgetDenial(s)
		}
	}
	return nil
}

// remaining is the key scope's answer.
func remaining(scopes []ledgerkit.Scope, st []scopeState) billing.Remaining {
	if len(scopes) == 0 || scopes[0].Kind != ledgerkit.Key {
		return billing.Unlimited
	}
	c := st[0]
	return ledgerkit.Remaining(scopes[0].Limits, c.requests, c.tokens, c.spent, c.held)
}

// Settle implements billing.Ledger: one transaction.
func (l *Ledger) Settle(ctx context.Context, u billing.Usage) error {
	if u.RequestID == "" {
		return errors.New("sqlledger: a usage record without a request id cannot be settled once")
	}
	created := u.CreatedAt
	if created.IsZero() {
		created = l.now()
	}
	id := l.b.text(u.RequestID)
	cost := ledgerkit.Amount(u.CostMicros)
	w := ledgerkit.Windows(created)
	err := l.b.inTx(ctx, func(db querier) error {
		n, err := db.exec(ctx, markSettled, id, l.now().UnixMilli())
		if err != nil || n == 0 {
			return err
		}
		var hk, hu sql.NullString
		var tokens, minute int64
		err = db.row(ctx, takeHold, id).Scan(&hk, &hu, &tokens, &minute)
		held := err == nil
		if err != nil && !l.b.noRows(err) {
			return err
		}
		// A scope of the usage without an id is debited when the hold had
		// it (it had limits).
		var debit []any
		for _, s := range []struct {
			kind, id string
			hold     sql.NullString
		}{{ledgerkit.Key, u.APIKeyID, hk}, {ledgerkit.User, u.UserID, hu}} {
			switch {
			case s.id != "":
				debit = append(debit, s.kind, l.b.text(s.id))
			case s.hold.Valid:
				debit = append(debit, s.kind, s.hold.String)
			}
		}
		if cost > 0 && len(debit) > 0 {
			args := []any{cost}
			for i := 0; i < len(debit); i += 2 {
				for _, win := range w {
					args = append(args, debit[i], debit[i+1], win)
				}
			}
			q := debitOne
			if len(debit) == 4 {
				q = debitTwo
			}
			if _, err := db.exec(ctx, q, args...); err != nil {
				return err
			}
		}
		if held {
			delta := ledgerkit.Amount(u.TotalTokens) - tokens
			for _, s := range []struct {
				kind string
				id   sql.NullString
			}{{ledgerkit.Key, hk}, {ledgerkit.User, hu}} {
				if !s.id.Valid || delta == 0 {
					continue
				}
				if _, err := db.exec(ctx, l.d.correctTokens, s.kind, s.id.String, minute, delta); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlledger: settle: %w", err)
	}
	return nil
}

// Release implements billing.Ledger: one DELETE.
func (l *Ledger) Release(ctx context.Context, requestID string) error {
	if _, err := l.b.plain().exec(ctx, deleteHold, l.b.text(requestID)); err != nil {
		return fmt.Errorf("sqlledger: release: %w", err)
	}
	return nil
}

// DeleteExpired deletes up to CleanupLimit holds that expired for a turn
// starting at now, and as many settled ids older than SettledTTL by the
// clock, and reports how many rows it deleted. A Hold calls it on its own
// once per CleanupInterval; a host that turned that off calls it from a
// job of its own.
func (l *Ledger) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	db := l.b.plain()
	h, err := db.exec(ctx, l.d.deleteHolds, now.UnixMilli()-l.holdTTL.Milliseconds(), l.limit)
	if err != nil {
		return 0, fmt.Errorf("sqlledger: delete expired holds: %w", err)
	}
	s, err := db.exec(ctx, l.d.deleteSettled, l.now().Add(-l.settledTTL).UnixMilli(), l.limit)
	if err != nil {
		return h, fmt.Errorf("sqlledger: delete old settled ids: %w", err)
	}
	return h + s, nil
}

// maybeCleanup runs one bounded cleanup when it is due and no other Hold
// runs one. A failed cleanup costs nothing: expired rows are never
// counted, and the next cleanup takes them.
func (l *Ledger) maybeCleanup(ctx context.Context, cutoff int64) {
	clock := l.now()
	if l.every < 0 || clock.UnixNano() < l.nextCleanup.Load() || !l.cleaning.CompareAndSwap(false, true) {
		return
	}
	defer l.cleaning.Store(false)
	n, err := l.DeleteExpired(ctx, time.UnixMilli(cutoff).Add(l.holdTTL))
	next := clock.Add(l.every)
	if err == nil && n >= int64(l.limit) {
		next = clock // more to delete: the next Hold goes on
	}
	l.nextCleanup.Store(next.UnixNano())
}

// Balance is the budget of API key apiKeyID under limits lim at now
// (zero: the Ledger's clock), for an admin page: what the window of now
// spent, what its turns in flight hold, and what is left. One statement.
func (l *Ledger) Balance(ctx context.Context, apiKeyID string, lim billing.Limits, now time.Time) (billing.Balance, error) {
	if now.IsZero() {
		now = l.now()
	}
	period := billing.PeriodKey(lim.Period, now)
	var spent, held, holds int64
	err := l.b.plain().row(ctx, spentHeldKey, l.b.text(apiKeyID), period, now.UnixMilli()-l.holdTTL.Milliseconds()).
		Scan(&spent, &held, &holds)
	if err != nil {
		return billing.Balance{}, fmt.Errorf("sqlledger: balance: %w", err)
	}
	return ledgerkit.Balance(lim, period, spent, held, holds), nil
}
