package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	const oldData, newData = "old contents, longer than the new ones", "new\x00contents\n"
	for _, tc := range []struct {
		name     string
		existing os.FileMode // 0: no file before
		perm     os.FileMode
		failAt   string // a step of write; "" for none
		want     string // contents after; "" for no file
		wantMode os.FileMode
	}{
		{"new 0600", 0, 0o600, "", newData, 0o600},
		{"new 0644", 0, 0o644, "", newData, 0o644},
		{"new 0400", 0, 0o400, "", newData, 0o400},
		// Replacing must not keep the old, looser mode.
		{"replace 0644 with 0600", 0o644, 0o600, "", newData, 0o600},
		{"replace 0600 with 0644", 0o600, 0o644, "", newData, 0o644},
		{"create fails", 0o644, 0o600, "create", oldData, 0o644},
		{"chmod fails", 0o644, 0o600, "chmod", oldData, 0o644},
		{"write fails", 0o644, 0o600, "write", oldData, 0o644},
		{"sync fails", 0o644, 0o600, "sync", oldData, 0o644},
		{"close fails", 0o644, 0o600, "close", oldData, 0o644},
		{"rename fails", 0o644, 0o600, "rename", oldData, 0o644},
		{"rename fails, no file before", 0, 0o600, "rename", "", 0},
		// The rename happened: the new content is there, not yet durable.
		{"directory sync fails", 0o644, 0o600, "syncdir", newData, 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "key.pem")
			if tc.existing != 0 {
				if err := os.WriteFile(path, []byte(oldData), tc.existing); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			injected := errors.New("injected")
			err := write(path, []byte(newData), tc.perm, func(step string) error {
				if step == tc.failAt {
					return injected
				}
				return nil
			})
			if got, want := err, error(nil); tc.failAt != "" {
				if !errors.Is(got, injected) || !strings.Contains(got.Error(), path) {
					t.Errorf("got error %v, want the injected one naming %s", got, path)
				}
			} else if got != want {
				t.Errorf("got error %v, want nil", got)
			}
			got, err := os.ReadFile(path)
			switch {
			case tc.want == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("got %q, %v; want no file", got, err)
			case tc.want != "" && string(got) != tc.want:
				t.Errorf("got contents %q, %v; want %q", got, err, tc.want)
			}
			if tc.want != "" {
				if got := mode(t, path); got != tc.wantMode {
					t.Errorf("got mode %04o, want %04o", got, tc.wantMode)
				}
			}
			if got, want := names(t, dir), wantNames(tc.want != ""); !slices.Equal(got, want) {
				t.Errorf("got directory %q, want %q (no temporary file left)", got, want)
			}
		})
	}
}

// Failures the file system makes, not injected ones.
func TestWriteFileRealFailures(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "no-such-dir", "f"), []byte("x"), 0o600); err == nil {
		t.Errorf("WriteFile into a missing directory: got nil error")
	}

	// The temporary file's name (".NAME.tmp123") is too long where NAME
	// is not.
	long := filepath.Join(dir, strings.Repeat("k", 250))
	if err := os.WriteFile(long, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(long, []byte("new"), 0o600); err == nil {
		t.Errorf("WriteFile with a too long temporary name: got nil error")
	}
	if got, _ := os.ReadFile(long); string(got) != "old" {
		t.Errorf("after a failed write got %q, want the old contents", got)
	}

	// A directory where the file belongs: the rename fails.
	occupied := filepath.Join(dir, "occupied")
	if err := os.MkdirAll(filepath.Join(occupied, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(occupied, []byte("new"), 0o600); err == nil {
		t.Errorf("WriteFile over a directory: got nil error")
	}
	if got := names(t, occupied); !slices.Equal(got, []string{"child"}) {
		t.Errorf("after a failed write the directory holds %q, want its child only", got)
	}
	if got, want := names(t, dir), []string{filepath.Base(long), "occupied"}; !slices.Equal(got, want) {
		t.Errorf("got directory %q, want %q (no temporary file left)", got, want)
	}
}

func wantNames(file bool) []string {
	if file {
		return []string{"key.pem"}
	}
	return []string{}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range entries {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
