package sqlusage

import (
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Usage records name users, keys and client addresses, so the database is
// the owner's alone. SQLite gives its -wal and -shm files the main file's
// mode, so the main file is created 0600 before SQLite opens it; the side
// files are also checked after open, which covers a database created by
// something else or under a looser mode.
const (
	sqliteFileMode os.FileMode = 0o600
)

// sqlitePath is the file a DSN names, "" for an in-memory database.
func sqlitePath(dsn string) string {
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

// prepareSQLiteFile creates a missing database 0600 before SQLite does it
// with its default 0644. Directories are neither created (a mistyped path
// fails to open, as before) nor chmodded: the directory may be shared,
// such as the working directory; the file's own mode is what protects it.
func prepareSQLiteFile(path string) error {
	if path == "" || runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, sqliteFileMode)
	if os.IsExist(err) || os.IsNotExist(err) {
		return nil // existing: tightened after open; missing directory: SQLite says so
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// tightenSQLiteFiles chmods the database and its side files down to 0600,
// with one log line when it changed anything.
func tightenSQLiteFiles(path string) {
	if path == "" || runtime.GOOS == "windows" {
		return
	}
	var changed []string
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&^sqliteFileMode == 0 {
			continue
		}
		if err := os.Chmod(p, sqliteFileMode); err != nil {
			slog.Default().Warn("sqlusage: cannot tighten the permissions of the usage database", "file", p, "error", err)
			continue
		}
		changed = append(changed, filepath.Base(p)+" "+fi.Mode().Perm().String()+"->"+sqliteFileMode.String())
	}
	if len(changed) > 0 {
		slog.Default().Warn("sqlusage: tightened permissions that let other users read the usage database",
			"dir", filepath.Dir(path), "changed", changed)
	}
}
