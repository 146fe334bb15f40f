package main

import (
	"context"
	"fmt"
	"time"

	"github.com/relaykit/responsesrelay/billing"
	"github.com/relaykit/responsesrelay/examples/redisstore"
	"github.com/relaykit/responsesrelay/examples/sqlledger"
	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// ledger is a billing.Ledger that can also tell what a key spent, for
// /debug/keys: both the Redis and the SQL ledgers are.
type ledger interface {
	billing.Ledger
	Balance(ctx context.Context, apiKeyID string, l billing.Limits, now time.Time) (billing.Balance, error)
}

var (
	_ ledger = (*redisstore.Ledger)(nil)
	_ ledger = (*sqlledger.Ledger)(nil)
)

// Names of the ledger relayd keeps, for logs and /debug/keys.
const (
	ledgerRedis    = "redis"
	ledgerSQLite   = "sqlite"
	ledgerPostgres = "postgres"
)

// openLedger picks where spend and rate limits are kept, once a key has
// a quota: in Redis when relayd shares its state there (every instance
// then spends one budget), else in the usage database, beside the rows it
// settles, so that spend survives a restart. The SQL ledger shares the
// sink's connection (SQLite: the one connection that queues the writes)
// or pool; the sink closes it.
func (s *server) openLedger(ctx context.Context) error {
	switch {
	case s.rdb != nil:
		s.ledger, s.ledgerKind = redisstore.NewLedger(s.rdb, nil), ledgerRedis
		return nil
	case s.sink.Driver() == sqlusage.DriverPostgres:
		l, err := sqlledger.NewPostgres(ctx, s.sink.Pool(), nil)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		s.ledger, s.ledgerKind = l, ledgerPostgres
	default:
		l, err := sqlledger.NewSQLite(ctx, s.sink.DB(), nil)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		s.ledger, s.ledgerKind = l, ledgerSQLite
	}
	return nil
}
