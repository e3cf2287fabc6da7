// Package tokenrecords keeps Kubernetes mode's join-token records in
// ConfigMaps in the control plane's namespace, one per token, so a token
// issued or revoked through one control-plane replica is known to every
// replica (controlplane.Config.TokenRecords). A record is the token's
// adminapi.TokenInfo (ID, SPIFFE ID, service, validity, revocation) as
// JSON; the token itself is never stored. Every read and write goes to the
// API server: there is no cache that could serve a revoked token as valid.
//
// Records are never deleted, not even long-expired ones: a workload's
// certificate renews only while some token for its identity is recorded and
// not revoked, and that outlives the token's own expiry.
//
// It must not depend on the control plane's server, the store, the proxy
// or the data plane.
package tokenrecords

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// Names, labels and the data key of the records' ConfigMaps.
const (
	// NamePrefix + the token's ID is a record's ConfigMap name.
	NamePrefix = "trellis-join-token-"
	// LabelManagedBy is "trellis" on every record.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelJoinToken is "true" on every record: List selects on it.
	LabelJoinToken = "trellis.dev/join-token"
	// LabelIdentity is identityHash of the record's SPIFFE ID (which is
	// no valid label value): ForIdentity selects on it.
	LabelIdentity = "trellis.dev/join-token-identity"
	// DataKey holds the record's JSON.
	DataKey = "token.json"
)

// validID: token IDs as internal/jointoken issues them (hex) fit in a
// ConfigMap name after NamePrefix; anything else is no token's ID.
var validID = regexp.MustCompile(`^[0-9a-f]{1,128}$`)

// pageSize bounds one List call.
const pageSize = 500

// Records keeps join-token records in ConfigMaps in one namespace. It
// implements controlplane.TokenRecords.
type Records struct {
	client    kubernetes.Interface
	namespace string
}

// New returns the records in namespace, the control plane's own.
func New(client kubernetes.Interface, namespace string) *Records {
	return &Records{client: client, namespace: namespace}
}

// Create records info, failing with adminapi.ErrConflict if a record with
// its ID exists.
func (r *Records) Create(ctx context.Context, info adminapi.TokenInfo) error {
	cm, err := r.configMap(info, "")
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().ConfigMaps(r.namespace).Create(ctx, cm, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%w: token %q is already recorded in configmap %s/%s", adminapi.ErrConflict, info.ID, r.namespace, cm.Name)
	case err != nil:
		return fmt.Errorf("create configmap %s/%s: %w", r.namespace, cm.Name, err)
	}
	return nil
}

// Get returns the record of token id and its ConfigMap's resourceVersion,
// or an error wrapping adminapi.ErrNotFound.
func (r *Records) Get(ctx context.Context, id string) (adminapi.TokenInfo, string, error) {
	if !validID.MatchString(id) {
		return adminapi.TokenInfo{}, "", fmt.Errorf("%w: token %q", adminapi.ErrNotFound, id)
	}
	cm, err := r.client.CoreV1().ConfigMaps(r.namespace).Get(ctx, NamePrefix+id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return adminapi.TokenInfo{}, "", fmt.Errorf("%w: token %q", adminapi.ErrNotFound, id)
	case err != nil:
		return adminapi.TokenInfo{}, "", fmt.Errorf("read configmap %s/%s%s: %w", r.namespace, NamePrefix, id, err)
	}
	if cm.Labels[LabelJoinToken] != "true" {
		return adminapi.TokenInfo{}, "", fmt.Errorf("%w: token %q (configmap %s/%s is no token record: it lacks label %s=true)", adminapi.ErrNotFound, id, r.namespace, cm.Name, LabelJoinToken)
	}
	info, err := decode(cm)
	if err != nil {
		return adminapi.TokenInfo{}, "", err
	}
	return info, cm.ResourceVersion, nil
}

// Update replaces the record of token info.ID if its ConfigMap is still at
// resourceVersion version: adminapi.ErrConflict if it changed,
// adminapi.ErrNotFound if it is gone.
func (r *Records) Update(ctx context.Context, info adminapi.TokenInfo, version string) error {
	if version == "" {
		return fmt.Errorf("update token %q: no resourceVersion", info.ID)
	}
	if !validID.MatchString(info.ID) {
		return fmt.Errorf("%w: token %q", adminapi.ErrNotFound, info.ID)
	}
	cm, err := r.configMap(info, version)
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().ConfigMaps(r.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("%w: configmap %s/%s changed since resourceVersion %s", adminapi.ErrConflict, r.namespace, cm.Name, version)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: token %q", adminapi.ErrNotFound, info.ID)
	case err != nil:
		return fmt.Errorf("update configmap %s/%s: %w", r.namespace, cm.Name, err)
	}
	return nil
}

// List returns every record in the namespace, ordered by ID.
func (r *Records) List(ctx context.Context) ([]adminapi.TokenInfo, error) {
	return r.list(ctx, labels.Set{LabelJoinToken: "true"}, "")
}

// ForIdentity returns the records of the tokens issued for spiffeID,
// ordered by ID.
func (r *Records) ForIdentity(ctx context.Context, spiffeID string) ([]adminapi.TokenInfo, error) {
	return r.list(ctx, labels.Set{LabelJoinToken: "true", LabelIdentity: identityHash(spiffeID)}, spiffeID)
}

// list returns the records selected by sel; when spiffeID is set, only
// those for it (the label is a hash).
func (r *Records) list(ctx context.Context, sel labels.Set, spiffeID string) ([]adminapi.TokenInfo, error) {
	opts := metav1.ListOptions{LabelSelector: sel.String(), Limit: pageSize}
	out := []adminapi.TokenInfo{}
	for {
		l, err := r.client.CoreV1().ConfigMaps(r.namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list configmaps in %s (%s): %w", r.namespace, opts.LabelSelector, err)
		}
		for i := range l.Items {
			info, err := decode(&l.Items[i])
			if err != nil {
				return nil, err
			}
			if spiffeID == "" || info.SPIFFEID == spiffeID {
				out = append(out, info)
			}
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	slices.SortFunc(out, func(a, b adminapi.TokenInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// configMap is info's record, at resourceVersion version when it is set.
func (r *Records) configMap(info adminapi.TokenInfo, version string) (*corev1.ConfigMap, error) {
	if !validID.MatchString(info.ID) {
		return nil, fmt.Errorf("record token %q: an ID is lowercase hex", info.ID)
	}
	val, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("record token %q: %w", info.ID, err)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: NamePrefix + info.ID, Namespace: r.namespace, ResourceVersion: version,
			Labels: map[string]string{LabelManagedBy: "trellis", LabelJoinToken: "true", LabelIdentity: identityHash(info.SPIFFEID)},
		},
		Data: map[string]string{DataKey: string(val)},
	}, nil
}

// decode reads a record from its ConfigMap, which must be named after the
// ID it holds.
func decode(cm *corev1.ConfigMap) (adminapi.TokenInfo, error) {
	var info adminapi.TokenInfo
	if err := json.Unmarshal([]byte(cm.Data[DataKey]), &info); err != nil {
		return adminapi.TokenInfo{}, fmt.Errorf("decode configmap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	if cm.Name != NamePrefix+info.ID {
		return adminapi.TokenInfo{}, fmt.Errorf("decode configmap %s/%s: it holds the record of token %q", cm.Namespace, cm.Name, info.ID)
	}
	return info, nil
}

// identityHash is a label value for a SPIFFE ID: 32 hex digits of its
// SHA-256 (a collision only costs ForIdentity a record it filters out).
func identityHash(spiffeID string) string {
	sum := sha256.Sum256([]byte(spiffeID))
	return hex.EncodeToString(sum[:16])
}
