// Package satoken verifies a proxy's projected ServiceAccount token in
// Kubernetes mode: the control plane asks the API server (TokenReview)
// who the token belongs to, and accepts it only when
//   - the API server authenticates it for the mesh's audience,
//   - it names a ServiceAccount that still exists (same uid),
//   - it is bound to a pod that still exists (same uid),
//
// and then the workload's SPIFFE ID is spiffe://TD/ns/NS/sa/SA, with the
// namespace and ServiceAccount from the review, never from the request.
//
// It must not depend on the control plane's server, the store, the proxy or
// the data plane: it takes a Kubernetes client and answers who a token is.
package satoken

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAudience is the audience the injected projected token volume
// asks for.
const DefaultAudience = "trellis"

// Keys of a bound token's extra info in a TokenReview.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Identity is who a reviewed token belongs to.
type Identity struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	// ID is spiffe://TD/ns/Namespace/sa/ServiceAccount.
	ID spiffeid.ID
}

// ErrRefused wraps every reason a token is not accepted; the message says
// which check failed (never the token).
var ErrRefused = errors.New("service account token refused")

// Reviewer checks tokens with the API server.
type Reviewer struct {
	Client      kubernetes.Interface
	TrustDomain spiffeid.TrustDomain
	// Audience the token must carry; empty means DefaultAudience.
	Audience string
}

// Review returns the identity token proves, or an error wrapping
// ErrRefused that says why it does not (or another error when the API
// server could not be asked).
func (r *Reviewer) Review(ctx context.Context, token string) (Identity, error) {
	aud := r.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	if token == "" {
		return Identity{}, refused("no token")
	}
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("satoken: TokenReview: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		why := "the API server does not authenticate it"
		if st.Error != "" {
			why += ": " + st.Error
		}
		return Identity{}, refused(why)
	}
	if !slices.Contains(st.Audiences, aud) {
		return Identity{}, refused(fmt.Sprintf("not for audience %q", aud))
	}
	ns, sa, ok := serviceAccountOf(st.User.Username)
	if !ok {
		return Identity{}, refused(fmt.Sprintf("%q is not a service account", st.User.Username))
	}
	podName, podUID := first(st.User.Extra[extraPodName]), first(st.User.Extra[extraPodUID])
	if podName == "" || podUID == "" {
		return Identity{}, refused("not bound to a pod (use a projected token volume)")
	}
	// The API server caches token authentication for a few seconds;
	// these two reads make a deleted ServiceAccount or pod count at once.
	acct, err := r.Client.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Identity{}, refused(fmt.Sprintf("service account %s/%s no longer exists", ns, sa))
	case err != nil:
		return Identity{}, fmt.Errorf("satoken: read service account %s/%s: %w", ns, sa, err)
	case string(acct.UID) != st.User.UID:
		return Identity{}, refused(fmt.Sprintf("service account %s/%s was deleted and made again", ns, sa))
	}
	pod, err := r.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Identity{}, refused(fmt.Sprintf("pod %s/%s no longer exists", ns, podName))
	case err != nil:
		return Identity{}, fmt.Errorf("satoken: read pod %s/%s: %w", ns, podName, err)
	case string(pod.UID) != podUID:
		return Identity{}, refused(fmt.Sprintf("pod %s/%s was deleted and made again", ns, podName))
	case pod.DeletionTimestamp != nil:
		return Identity{}, refused(fmt.Sprintf("pod %s/%s is terminating", ns, podName))
	case pod.Spec.ServiceAccountName != sa:
		return Identity{}, refused(fmt.Sprintf("pod %s/%s runs as service account %s, not %s", ns, podName, pod.Spec.ServiceAccountName, sa))
	}
	id, err := spiffeid.FromSegments(r.TrustDomain, "ns", ns, "sa", sa)
	if err != nil {
		return Identity{}, refused(fmt.Sprintf("no SPIFFE ID for %s/%s: %v", ns, sa, err))
	}
	return Identity{Namespace: ns, ServiceAccount: sa, PodName: podName, PodUID: podUID, ID: id}, nil
}

// serviceAccountOf parses system:serviceaccount:NS:NAME.
func serviceAccountOf(user string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, ":")
	return ns, sa, ok && ns != "" && sa != "" && !strings.Contains(sa, ":")
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func refused(why string) error { return fmt.Errorf("%w: %s", ErrRefused, why) }

// ReviewWorkloadToken is Review in the shape the control plane's Certify
// takes (controlplane.WorkloadTokenReviewer): the identity, and the pod
// for the audit record.
func (r *Reviewer) ReviewWorkloadToken(ctx context.Context, token string) (spiffeid.ID, map[string]string, error) {
	id, err := r.Review(ctx, token)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	return id.ID, map[string]string{"pod": id.Namespace + "/" + id.PodName, "pod_uid": id.PodUID}, nil
}
