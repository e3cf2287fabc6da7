// Package casecret keeps Kubernetes mode's CA (and the admin token) in a
// Secret, so every control-plane replica signs with the same CA and
// answers the same admin token. The first replica to start
// creates the CA and the Secret with an atomic create; a replica that
// loses the race takes the winner's. Each replica then materializes the
// Secret's files into its data dir (keys 0600), where internal/meshca
// loads them as in hosts mode. Key material is never logged. Share
// (share.go) then keeps the replicas on one version: a root rotation or
// retirement made on any replica is published to the Secret, serialized by
// its resourceVersion, and followed by the others; and it carries each
// replica's proxies' certificate reports (reports.go).
//
// It must not depend on the control plane's server, the store, the proxy
// or the data plane.
package casecret

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/atomicfile"
)

// Secret keys are file paths under the data dir with "/" written as
// this separator (Secret keys allow [-._a-zA-Z0-9]).
const sep = "__"

// LabelManagedBy marks the Secret as Trellis's.
const LabelManagedBy = "app.kubernetes.io/managed-by"

// Ensure makes dataDir hold the mesh's CA from the Secret namespace/name,
// creating both with create (which writes a new CA, and the admin token,
// into the directory it is given) when the Secret does not exist yet. It
// reports whether this call created the CA. Only ca.crt, the files under
// ca/ and admin.token are kept.
func Ensure(ctx context.Context, client kubernetes.Interface, namespace, name, dataDir string, create func(dir string) error) (bool, error) {
	secrets := client.CoreV1().Secrets(namespace)
	s, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return false, materialize(s, dataDir)
	case !apierrors.IsNotFound(err):
		return false, fmt.Errorf("casecret: read secret %s/%s: %w", namespace, name, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dataDir)), ".ca-new-")
	if err != nil {
		return false, fmt.Errorf("casecret: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := create(tmp); err != nil {
		return false, fmt.Errorf("casecret: create the CA: %w", err)
	}
	data, err := pack(tmp)
	if err != nil {
		return false, err
	}
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{LabelManagedBy: "trellis"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	created, err := secrets.Create(ctx, s, metav1.CreateOptions{})
	switch {
	case err == nil:
		return true, materialize(created, dataDir)
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race: use its CA, drop ours.
		theirs, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("casecret: read secret %s/%s after losing the create: %w", namespace, name, err)
		}
		return false, materialize(theirs, dataDir)
	default:
		return false, fmt.Errorf("casecret: create secret %s/%s: %w", namespace, name, err)
	}
}

// pack reads dir's CA files into Secret data.
func pack(dir string) (map[string][]byte, error) {
	data := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !kept(rel) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data[strings.ReplaceAll(filepath.ToSlash(rel), "/", sep)] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("casecret: read the new CA: %w", err)
	}
	if len(data) == 0 {
		return nil, errors.New("casecret: the new CA wrote no files")
	}
	return data, nil
}

// materialize writes the Secret's files into dataDir: keys and other
// files under ca/ with mode 0600, ca.crt 0644, each replaced atomically.
func materialize(s *corev1.Secret, dataDir string) error {
	for k, v := range s.Data {
		rel := filepath.FromSlash(strings.ReplaceAll(k, sep, "/"))
		if !kept(rel) || !filepath.IsLocal(rel) {
			return fmt.Errorf("casecret: secret %s/%s: key %q is no CA file", s.Namespace, s.Name, k)
		}
		p := filepath.Join(dataDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("casecret: %w", err)
		}
		mode := os.FileMode(0o600) // keys and the admin token
		if rel == "ca.crt" {
			mode = 0o644
		}
		if err := atomicfile.WriteFile(p, v, mode); err != nil {
			return fmt.Errorf("casecret: write %s: %w", rel, err)
		}
	}
	return nil
}

// AdminTokenFile is the admin token's file in a data dir
// (adminhttp.TokenFile): kept with the CA so every replica answers the
// same admin token.
const AdminTokenFile = "admin.token"

// kept: the files replicas share: ca.crt, everything under ca/, and the
// admin token.
func kept(rel string) bool {
	rel = filepath.ToSlash(rel)
	return rel == "ca.crt" || rel == AdminTokenFile || strings.HasPrefix(rel, "ca/")
}
