//go:build unix

package billing_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaykit/responsesrelay/billing"
)

// modesOf maps dir and every file in it to its permission bits.
func modesOf(t *testing.T, dir string) map[string]os.FileMode {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]os.FileMode{".": fi.Mode().Perm()}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Mode().Perm()
	}
	return m
}

// A new spool is the owner's alone, whatever the umask: no bit for group
// or others on the directory, the lock, segments and ack logs.
func TestSpoolCreatesOwnerOnlyModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openSpool(t, dir, hung, billing.DeliveryOptions{})
	recordAll(t, s, 0, 3)
	billing.CrashSpool(s) // keeps the segment and its ack log on disk
	m := modesOf(t, dir)
	if len(m) < 4 {
		t.Fatalf("spool holds %v; want the directory, LOCK, a segment and its ack log", m)
	}
	for name, mode := range m {
		if mode&0o077 != 0 || mode&0o600 != 0o600 {
			t.Errorf("%s has mode %v; want owner read-write only", name, mode)
		}
	}
}

// A spool left readable by others is tightened on open, and the log says so.
func TestSpoolTightensWiderModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openSpool(t, dir, hung, billing.DeliveryOptions{})
	recordAll(t, s, 0, 3)
	billing.CrashSpool(s)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name := range modesOf(t, dir) {
		if name != "." {
			if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var logs bytes.Buffer
	s = openSpool(t, dir, hung, billing.DeliveryOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer billing.CrashSpool(s)
	for name, mode := range modesOf(t, dir) {
		want := os.FileMode(0o600)
		if name == "." {
			want = 0o700
		}
		if mode != want {
			t.Errorf("%s has mode %v after reopen; want %v", name, mode, want)
		}
	}
	if n := strings.Count(logs.String(), "tightened permissions"); n != 1 {
		t.Fatalf("%d log lines about tightened permissions, want 1:\n%s", n, logs.String())
	}
}
