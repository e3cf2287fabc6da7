package kubetest

import (
	"context"
	"encoding/base64"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RequestToken asks the TokenRequest API for a token of the ServiceAccount
// namespace/sa with audiences and expiry, bound to the pod named pod when
// it is not empty (the pod must exist: the binding carries its uid), as a
// kubelet's projected token volume gets one.
func RequestToken(ctx context.Context, client kubernetes.Interface, namespace, sa, pod string, expiry time.Duration, audiences ...string) (string, error) {
	secs := int64(expiry / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &secs}}
	if pod != "" {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("kubetest: token bound to pod %s/%s: %w", namespace, pod, err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}
	}
	resp, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("kubetest: token for %s/%s: %w", namespace, sa, err)
	}
	if resp.Status.Token == "" {
		return "", errNoToken
	}
	return resp.Status.Token, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
