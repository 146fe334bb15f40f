//go:build unix

package sqlconversation_test

import (
	"os"
	"path/filepath"
	"testing"
)

// The records hold user content: the database and its side files are the
// owner's alone.
func TestSQLiteCreatesOwnerOnlyFiles(t *testing.T) {
	tg := sqliteTarget(t)
	s := tg.open(t, nil)
	put(t, s, "k", "resp_1", record("k", "resp_1"))
	for _, p := range []string{tg.dsn, tg.dsn + "-wal", tg.dsn + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), got)
		}
	}
}
