// Package pgpool holds what the examples' PostgreSQL stores share about
// their connection: opening the pool and creating the schema once when
// relays start together.
package pgpool

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool to url (a postgres:// URL or a key=value DSN, as
// pgx accepts them) and runs init on it; on init's error the pool is
// closed. who prefixes the errors ("sqlusage").
func Open(ctx context.Context, url, who string, init func(*pgxpool.Pool) error) (*pgxpool.Pool, error) {
	if strings.TrimSpace(url) == "" {
		return nil, errors.New(who + ": empty PostgreSQL URL")
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("%s: postgres: %w", who, err)
	}
	if err := init(pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// CreateSchema runs schema in one transaction holding the advisory lock
// named lock (a constant such as "sqlusage.usage_records"): concurrent
// CREATE TABLE IF NOT EXISTS can fail on the catalog's unique indexes, so
// relays starting together take turns.
func CreateSchema(ctx context.Context, pool *pgxpool.Pool, who, lock, schema string) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('"+lock+"'))"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: create schema: %w", who, err)
	}
	return nil
}
