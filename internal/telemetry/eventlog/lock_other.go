//go:build !unix

package eventlog

import (
	"os"
	"path/filepath"
)

const lockName = "lock"

// lockDir only creates the lock file: without flock, keeping two processes
// off one log is up to the operator.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
}
