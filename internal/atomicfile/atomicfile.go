// Package atomicfile replaces files so that a crash or a failed write
// leaves either the old content or the new, never a mix, and the new
// content survives a power loss once WriteFile returns: the one way
// Trellis writes keys, tokens, certificates and state files.
//
// Any package may import it. It must not import other internal packages.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode perm: it creates a temporary
// file in the same directory (named ".BASE.tmp*", which the telemetry
// spool's start-up sweep relies on), sets perm, writes and fsyncs it,
// renames it over path and fsyncs the directory. perm is exact (the umask
// does not apply), so a key written 0600 over a file that was 0644 ends up
// 0600. On error no temporary file is left behind and path holds its old
// content, except when only the final directory fsync failed: then it
// holds the new content, which a power loss may still undo.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, nil)
}

// write is WriteFile with fail, when not nil, called before each step
// (create, chmod, write, sync, close, rename, syncdir): a non-nil error
// fails that step. Tests use it to check what a failure at each step
// leaves.
func write(path string, data []byte, perm os.FileMode, fail func(step string) error) error {
	step := func(name string, do func() error) error {
		if fail != nil {
			if err := fail(name); err != nil {
				return err
			}
		}
		return do()
	}
	dir := filepath.Dir(path)
	var tmp *os.File
	err := step("create", func() (err error) {
		tmp, err = os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
		return err
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	for _, s := range []struct {
		name string
		do   func() error
	}{
		{"chmod", func() error { return tmp.Chmod(perm) }},
		{"write", func() error { _, err := tmp.Write(data); return err }},
		{"sync", tmp.Sync},
	} {
		if err := step(s.name, s.do); err != nil {
			tmp.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := step("close", tmp.Close); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := step("rename", func() error { return os.Rename(tmp.Name(), path) }); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed = true
	if err := step("syncdir", func() error { return SyncDir(dir) }); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs the directory dir, making the creations, renames and
// removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
