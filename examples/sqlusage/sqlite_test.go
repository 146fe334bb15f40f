package sqlusage_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// Another process holding the write lock fails Record within its context,
// and the sink works again once the lock is released.
func TestSQLiteLockedFailsWithinContext(t *testing.T) {
	s, path := open(t)
	ctx := context.Background()
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	within(t, 500*time.Millisecond, "Record on a locked database", func(ctx context.Context) error {
		return s.Record(ctx, sample("rr_locked"))
	})
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*sqlusage.BusyTimeout)
	defer cancel()
	if err := s.Record(rctx, sample("rr_unlocked")); err != nil {
		t.Fatal(err)
	}
}

func TestSQLiteOpenFails(t *testing.T) {
	within(t, 5*time.Second, "OpenSQLite in a missing directory", func(ctx context.Context) error {
		_, err := sqlusage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "missing", "usage.db"))
		return err
	})
}
