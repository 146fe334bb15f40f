//go:build unix

package sqlusage_test

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/examples/sqlusage"
)

// checkModes fails unless the database and its -wal and -shm files exist
// and carry exactly want.
func checkModes(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(p), got, want)
		}
	}
}

// A new database and its side files are the owner's alone, whatever the
// umask (the umask only clears bits; 0600 asked for is 0600 or less, and
// the check is exact).
func TestSQLiteCreatesOwnerOnlyFiles(t *testing.T) {
	for _, form := range []string{"path", "file URI"} {
		t.Run(form, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "usage.db")
			dsn := path
			if form == "file URI" {
				dsn = "file:" + path + "?cache=private"
			}
			s, err := sqlusage.OpenSQLite(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Record(context.Background(), sample("rr_modes")); err != nil {
				t.Fatal(err)
			}
			checkModes(t, path, 0o600)
		})
	}
}

// A database left readable by others is tightened on open, side files
// included, with one log line.
func TestSQLiteTightensWiderModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(sqlusage.Schema); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(old)

	s, err := sqlusage.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkModes(t, path, 0o600)
	if n := strings.Count(logs.String(), "tightened permissions"); n != 1 {
		t.Fatalf("%d log lines about tightened permissions, want 1:\n%s", n, logs.String())
	}
}
