// Package cafiles reads and writes the files control-plane replicas share
// from a data dir: the trust bundle (ca.crt), everything under ca/ (the CA
// generations, their keys, the join tokens' signing key) and the admin
// token. Kubernetes mode keeps them in a Secret (internal/kube/casecret),
// a control plane on etcd in its store, encrypted (internal/controlplane/
// sharedca); both pack a data dir into path → content and write such a
// map back. Keys are written 0600, nothing of their content is logged.
//
// It must not depend on the control plane's server, the store, the proxy
// or the data plane.
package cafiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellismesh/trellis/internal/atomicfile"
)

// AdminTokenFile is the admin token's file in a data dir
// (adminhttp.TokenFile).
const AdminTokenFile = "admin.token"

// Shared reports whether the data dir's file rel (slash-separated) is one
// replicas share.
func Shared(rel string) bool {
	rel = filepath.ToSlash(rel)
	return rel == "ca.crt" || rel == AdminTokenFile || strings.HasPrefix(rel, "ca/")
}

// Pack reads dir's shared files, keyed by slash-separated relative path.
func Pack(dir string) (map[string][]byte, error) {
	data := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !Shared(rel) || hidden(rel) {
			return nil // not shared, or a rotation's unfinished generation
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the CA files of %s: %w", dir, err)
	}
	if len(data) == 0 {
		return nil, errors.New("no CA files in " + dir)
	}
	return data, nil
}

// Materialize writes files (from Pack) into dataDir, each replaced
// atomically: ca.crt 0644, everything else 0600. A path that is not a
// shared file, or that leaves the directory, is refused before anything
// is written.
func Materialize(files map[string][]byte, dataDir string) error {
	for rel := range files {
		if !Shared(rel) || !filepath.IsLocal(filepath.FromSlash(rel)) {
			return fmt.Errorf("%q is no CA file", rel)
		}
	}
	for rel, v := range files {
		p := filepath.Join(dataDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o600) // keys and the admin token
		if rel == "ca.crt" {
			mode = 0o644
		}
		if err := atomicfile.WriteFile(p, v, mode); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
	}
	return nil
}

// hidden: a path with a component starting with "." (meshca writes a new
// generation under such a name before renaming it into place).
func hidden(rel string) bool {
	for _, c := range strings.Split(filepath.ToSlash(rel), "/") {
		if strings.HasPrefix(c, ".") {
			return true
		}
	}
	return false
}
