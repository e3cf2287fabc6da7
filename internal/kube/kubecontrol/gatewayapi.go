package kubecontrol

import (
	"context"
	"fmt"
	"log/slog"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellismesh/trellis/internal/kube/resources"
)

// watchGatewayAPI makes res watch the Gateway API's mesh routes when their
// CRDs are served and this replica may list and watch them (an install
// from before they were in its RBAC would otherwise never sync). It says
// which in the log.
func watchGatewayAPI(ctx context.Context, client kubernetes.Interface, res *resources.Source, log *slog.Logger) error {
	served, err := resources.GatewayAPIServed(client.Discovery())
	if err != nil {
		return err
	}
	if !served {
		log.Info("Gateway API mesh routes not watched: their CRDs are not installed")
		return nil
	}
	for _, gvr := range []struct{ resource, verb string }{
		{resources.HTTPRoutes.Resource, "list"}, {resources.HTTPRoutes.Resource, "watch"},
		{resources.GRPCRoutes.Resource, "list"}, {resources.GRPCRoutes.Resource, "watch"},
	} {
		review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: resources.HTTPRoutes.Group, Resource: gvr.resource, Verb: gvr.verb,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("access review of %s: %w", gvr.resource, err)
		}
		if !review.Status.Allowed {
			log.Warn("Gateway API mesh routes not watched: this replica may not "+gvr.verb+" "+gvr.resource+"; apply the install's ClusterRole again (docs/kubernetes.md)", "resource", gvr.resource)
			return nil
		}
	}
	res.WatchGatewayAPI()
	log.Info("Gateway API mesh routes watched", "controller", "trellis.dev/mesh")
	return nil
}
