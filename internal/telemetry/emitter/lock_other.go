//go:build !unix

package emitter

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir only creates dir/lock: without flock(2), keeping two proxies
// off one spool is up to the operator.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return f, nil
}

func unlockDir(f *os.File) { f.Close() }
