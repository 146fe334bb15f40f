package sqlusage

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relaykit/responsesrelay/examples/internal/pgpool"
)

// addedColumns are the columns of usage_records added after its first
// version, oldest first: the schemas create them in new tables, and
// opening a Sink adds them to a table an earlier version created, last,
// in this order (so that old and new tables end up alike). Each has a
// default, which the rows written before it get.
var addedColumns = []struct {
	name, sqlite, postgres string
}{
	{"cost_micros", "INTEGER NOT NULL DEFAULT 0", "BIGINT NOT NULL DEFAULT 0"},
}

// migrateSQLite adds the missing columns. Another process opening the
// same file may add a column first: the check after a failed ALTER sees
// it there.
func migrateSQLite(ctx context.Context, db *sql.DB) error {
	for _, c := range addedColumns {
		has := func() (bool, error) {
			var n int
			err := db.QueryRowContext(ctx,
				`SELECT count(*) FROM pragma_table_info('usage_records') WHERE name = ?`, c.name).Scan(&n)
			return n > 0, err
		}
		ok, err := has()
		if err != nil {
			return fmt.Errorf("sqlusage: migrate: %w", err)
		}
		if ok {
			continue
		}
		if _, err := db.ExecContext(ctx, `ALTER TABLE usage_records ADD COLUMN `+c.name+` `+c.sqlite); err != nil {
			if ok, _ := has(); !ok {
				return fmt.Errorf("sqlusage: migrate: add column %s: %w", c.name, err)
			}
		}
	}
	return nil
}

// migratePostgres adds the missing columns to the table of the first
// schema of the search_path, the one PostgresSchema creates. The check
// comes first because ALTER TABLE takes the table's exclusive lock even
// when it has nothing to add, which would queue every insert behind a
// long report; the ALTER itself runs under the schema lock, so relays
// starting together add a column once.
func migratePostgres(ctx context.Context, pool *pgxpool.Pool) error {
	for _, c := range addedColumns {
		var has bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = 'usage_records' AND column_name = $1)`, c.name).Scan(&has)
		if err != nil {
			return fmt.Errorf("sqlusage: migrate: %w", err)
		}
		if has {
			continue
		}
		alter := `ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS ` + c.name + ` ` + c.postgres
		if err := pgpool.CreateSchema(ctx, pool, "sqlusage: column "+c.name, schemaLock, alter); err != nil {
			return err
		}
	}
	return nil
}
