package billing

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
)

// Usage records name users, keys and client addresses: the spool
// directory is the owner's alone. Creation asks for these modes; an
// existing spool left wider (made by hand, or by an older version, or
// under a loose umask by another tool) is tightened on open.
const (
	spoolDirMode  os.FileMode = 0o700
	spoolFileMode os.FileMode = 0o600
)

// tightenSpool chmods dir and the regular files directly in it down to
// the owner's modes, with one log line when it changed anything. Errors
// are logged, not returned: a spool that cannot be tightened (not the
// owner) still works, as it did before.
func tightenSpool(dir string, log *slog.Logger) {
	if runtime.GOOS == "windows" {
		return // mode bits there are not permissions
	}
	var tightened []string
	var failed error
	tighten := func(path string, fi os.FileInfo, want os.FileMode) {
		if fi.Mode().Perm()&^want == 0 {
			return
		}
		if err := os.Chmod(path, want); err != nil {
			failed = err
			return
		}
		tightened = append(tightened, filepath.Base(path)+" "+fi.Mode().Perm().String()+"->"+want.String())
	}
	if fi, err := os.Stat(dir); err == nil {
		tighten(dir, fi, spoolDirMode)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		failed = err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		tighten(filepath.Join(dir, e.Name()), fi, spoolFileMode)
	}
	if len(tightened) > 0 {
		log.Warn("billing: spool: tightened permissions that let other users read usage records",
			slog.String("dir", dir), slog.Any("changed", tightened))
	}
	if failed != nil {
		log.Warn("billing: spool: cannot tighten permissions", slog.String("dir", dir), slog.Any("error", failed))
	}
}
