//go:build unix

package sqlconversation_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/relaykit/responsesrelay/examples/internal/convtest"
)

// The records hold user content: the database and its side files are the
// owner's alone.
func TestSQLiteCreatesOwnerOnlyFiles(t *testing.T) {
	tg := sqliteTarget(t)
	s := tg.open(t, nil)
	convtest.Put(t, s, "k", "resp_1", convtest.Record("k", "resp_1"))
	for _, p := range []string{tg.DSN, tg.DSN + "-wal", tg.DSN + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), got)
		}
	}
}
