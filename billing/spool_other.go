//go:build !unix

package billing

import (
	"os"
	"path/filepath"
)

// lockDir only marks the directory: this platform has no flock, so two
// Spools on one directory are not detected.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
}

// syncDir is a no-op where directories cannot be synced.
func syncDir(string) error { return nil }
