// Package sqlitefile holds what the examples' SQLite stores share about
// their database file: where a DSN points, creating it owner-only,
// tightening the modes of an existing one, and connection pragmas.
package sqlitefile

import (
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Mode is the mode of a database and its side files. The stores keep
// records of users (usage, conversation content), so the database is the
// owner's alone. SQLite gives its -wal and -shm files the main file's
// mode, so the main file is created with Mode before SQLite opens it; the
// side files are also checked after open (Tighten), which covers a
// database created by something else or under a looser mode.
const Mode os.FileMode = 0o600

// Path is the file a DSN names, "" for an in-memory database.
func Path(dsn string) string {
	path, query, _ := strings.Cut(dsn, "?")
	if rest, ok := strings.CutPrefix(path, "file:"); ok {
		path = strings.TrimPrefix(rest, "//") // file:///abs or file:rel
		if p, err := url.PathUnescape(path); err == nil {
			path = p
		}
	}
	q, _ := url.ParseQuery(query)
	if path == "" || path == ":memory:" || q.Get("mode") == "memory" || q.Get("vfs") == "memdb" {
		return ""
	}
	return path
}

// Create creates a missing database with Mode before SQLite does it with
// its default 0644. Directories are neither created (a mistyped path fails
// to open) nor chmodded: the directory may be shared, such as the working
// directory; the file's own mode is what protects it.
func Create(path string) error {
	if path == "" || runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, Mode)
	if os.IsExist(err) || os.IsNotExist(err) {
		return nil // existing: tightened after open; missing directory: SQLite says so
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// Tighten chmods the database and its side files down to Mode, with one
// log line when it changed anything. who prefixes the log messages and
// what names the database in them ("usage database").
func Tighten(path, who, what string) {
	if path == "" || runtime.GOOS == "windows" {
		return
	}
	var changed []string
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&^Mode == 0 {
			continue
		}
		if err := os.Chmod(p, Mode); err != nil {
			slog.Default().Warn(who+": cannot tighten the permissions of the "+what, "file", p, "error", err)
			continue
		}
		changed = append(changed, filepath.Base(p)+" "+fi.Mode().Perm().String()+"->"+Mode.String())
	}
	if len(changed) > 0 {
		slog.Default().Warn(who+": tightened permissions that let other users read the "+what,
			"dir", filepath.Dir(path), "changed", changed)
	}
}

// WithPragmas adds to dsn each pragma, written "name(value)", that dsn
// does not set already. The driver runs _pragma parameters on every new
// connection, which is what per-connection pragmas such as busy_timeout
// need.
func WithPragmas(dsn string, pragmas ...string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	for _, p := range pragmas {
		name, _, _ := strings.Cut(p, "(")
		if strings.Contains(dsn, name) {
			continue
		}
		dsn += sep + "_pragma=" + p
		sep = "&"
	}
	return dsn
}
