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
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellismesh/trellis/internal/cafiles"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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

// pack reads dir's shared files into Secret data (keys may not hold "/").
func pack(dir string) (map[string][]byte, error) {
	files, err := cafiles.Pack(dir)
	if err != nil {
		return nil, fmt.Errorf("casecret: %w", err)
	}
	data := make(map[string][]byte, len(files))
	for rel, b := range files {
		data[strings.ReplaceAll(rel, "/", sep)] = b
	}
	return data, nil
}

// materialize writes the Secret's files into dataDir (cafiles.Materialize).
func materialize(s *corev1.Secret, dataDir string) error {
	files := make(map[string][]byte, len(s.Data))
	for k, v := range s.Data {
		files[strings.ReplaceAll(k, sep, "/")] = v
	}
	if err := cafiles.Materialize(files, dataDir); err != nil {
		return fmt.Errorf("casecret: secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// AdminTokenFile is the admin token's file in a data dir: kept with the
// CA so every replica answers the same admin token.
const AdminTokenFile = cafiles.AdminTokenFile
