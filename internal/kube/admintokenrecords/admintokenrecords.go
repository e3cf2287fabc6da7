// Package admintokenrecords keeps Kubernetes mode's admin-token records
// in Secrets in the control plane's namespace, one per token, so an admin
// token created or revoked through one control-plane replica holds on
// every replica (controlplane.Config.AdminTokenRecords). A record is the
// token's admintokens.Record (name, role, namespaces, creator, created,
// expires, revoked, and the SHA-256 of the secret) as JSON; the token
// itself is never stored. Secrets, not ConfigMaps, because the digest is
// sensitive: whoever reads it can try to guess the token offline (256
// random bits make that hopeless, but the digest is still nobody's
// business). Every read and write goes to the API server: there is no
// cache that could serve a revoked token as valid.
//
// It must not depend on the control plane's server, a store backend, the
// proxy or the data plane.
package admintokenrecords

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/names"
)

// Names, labels and the data key of the records' Secrets.
const (
	// NamePrefix + the token's name is a record's Secret name.
	NamePrefix = "trellis-admin-token-"
	// LabelManagedBy is "trellis" on every record.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelAdminToken is "true" on every record: List selects on it.
	LabelAdminToken = "trellis.dev/admin-token"
	// DataKey holds the record's JSON.
	DataKey = "record.json"
)

// pageSize bounds one List call.
const pageSize = 500

// Records keeps admin-token records in Secrets in one namespace. It
// implements admintokens.Records (controlplane.AdminTokenRecords).
type Records struct {
	client    kubernetes.Interface
	namespace string
}

var _ admintokens.Records = (*Records)(nil)

// New returns the records in namespace, the control plane's own.
func New(client kubernetes.Interface, namespace string) *Records {
	return &Records{client: client, namespace: namespace}
}

func notFound(name string) error {
	return fmt.Errorf("%w: admin token %q", adminapi.ErrNotFound, name)
}

// Create records rec, failing with adminapi.ErrConflict if a record of
// its name exists (valid or not: the service checks and replaces an
// invalid one with Update at its resourceVersion).
func (r *Records) Create(ctx context.Context, rec admintokens.Record) error {
	s, err := r.secret(rec, "")
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Secrets(r.namespace).Create(ctx, s, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%w: admin token %q is already recorded in secret %s/%s", adminapi.ErrConflict, rec.Name, r.namespace, s.Name)
	case err != nil:
		return fmt.Errorf("create secret %s/%s: %w", r.namespace, s.Name, err)
	}
	return nil
}

// Get returns the record of the token name and its Secret's
// resourceVersion, or an error wrapping adminapi.ErrNotFound.
func (r *Records) Get(ctx context.Context, name string) (admintokens.Record, string, error) {
	if !names.IsDNSLabel(name) {
		return admintokens.Record{}, "", notFound(name)
	}
	s, err := r.client.CoreV1().Secrets(r.namespace).Get(ctx, NamePrefix+name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return admintokens.Record{}, "", notFound(name)
	case err != nil:
		return admintokens.Record{}, "", fmt.Errorf("read secret %s/%s%s: %w", r.namespace, NamePrefix, name, err)
	}
	if s.Labels[LabelAdminToken] != "true" {
		return admintokens.Record{}, "", fmt.Errorf("%w (secret %s/%s is no admin-token record: it lacks label %s=true)", notFound(name), r.namespace, s.Name, LabelAdminToken)
	}
	rec, err := decode(s)
	if err != nil {
		return admintokens.Record{}, "", err
	}
	return rec, s.ResourceVersion, nil
}

// Update replaces the record of the token rec.Name if its Secret is still
// at resourceVersion version: adminapi.ErrConflict if it changed,
// adminapi.ErrNotFound if it is gone.
func (r *Records) Update(ctx context.Context, rec admintokens.Record, version string) error {
	if version == "" {
		return fmt.Errorf("update admin token %q: no resourceVersion", rec.Name)
	}
	if !names.IsDNSLabel(rec.Name) {
		return notFound(rec.Name)
	}
	s, err := r.secret(rec, version)
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Secrets(r.namespace).Update(ctx, s, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("%w: secret %s/%s changed since resourceVersion %s", adminapi.ErrConflict, r.namespace, s.Name, version)
	case apierrors.IsNotFound(err):
		return notFound(rec.Name)
	case err != nil:
		return fmt.Errorf("update secret %s/%s: %w", r.namespace, s.Name, err)
	}
	return nil
}

// List returns every record in the namespace, ordered by name.
func (r *Records) List(ctx context.Context) ([]admintokens.Record, error) {
	opts := metav1.ListOptions{LabelSelector: labels.Set{LabelAdminToken: "true"}.String(), Limit: pageSize}
	out := []admintokens.Record{}
	for {
		l, err := r.client.CoreV1().Secrets(r.namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list secrets in %s (%s): %w", r.namespace, opts.LabelSelector, err)
		}
		for i := range l.Items {
			rec, err := decode(&l.Items[i])
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	slices.SortFunc(out, func(a, b admintokens.Record) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// secret is rec's Secret, at resourceVersion version when it is set.
func (r *Records) secret(rec admintokens.Record, version string) (*corev1.Secret, error) {
	if !names.IsDNSLabel(rec.Name) {
		return nil, fmt.Errorf("record admin token %q: a name %s", rec.Name, names.DNSLabelRule)
	}
	rec.LastUsed = nil // per replica, in memory
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("record admin token %q: %w", rec.Name, err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: NamePrefix + rec.Name, Namespace: r.namespace, ResourceVersion: version,
			Labels: map[string]string{LabelManagedBy: "trellis", LabelAdminToken: "true"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{DataKey: val},
	}, nil
}

// decode reads a record from its Secret, which must be named after the
// token it holds.
func decode(s *corev1.Secret) (admintokens.Record, error) {
	var rec admintokens.Record
	if err := json.Unmarshal(s.Data[DataKey], &rec); err != nil {
		return admintokens.Record{}, fmt.Errorf("decode secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if s.Name != NamePrefix+rec.Name {
		return admintokens.Record{}, fmt.Errorf("decode secret %s/%s: it holds the record of admin token %q", s.Namespace, s.Name, rec.Name)
	}
	return rec, nil
}
