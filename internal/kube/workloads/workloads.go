// Package workloads is Kubernetes mode's registry source: the mesh's
// workloads and their services read from the API server with client-go
// shared informers (no polling). A workload is a pod the sidecar was
// injected into (annotation trellis.dev/injected) that an EndpointSlice
// lists for a Service: its SPIFFE ID comes from the pod's ServiceAccount,
// its labels feed policy selectors, it is dialed at the pod's IP on the
// proxy's inbound port, and the Service's ClusterIP is its virtual IP.
//
// It must not depend on the control plane's server, the store, the
// signers, the proxy or the data plane: it reads the API and hands the
// snapshot builder (internal/controlplane/snapshot) its input.
package workloads

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/kube/inject"
)

// Source keeps the mesh's workloads current from Services, EndpointSlices
// and Pods.
type Source struct {
	td       spiffeid.TrustDomain
	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	changed  chan struct{}
	gen      atomic.Uint64
}

// New returns a Source over client for the mesh's trust domain; Start
// runs it.
func New(client kubernetes.Interface, td spiffeid.TrustDomain) *Source {
	f := informers.NewSharedInformerFactory(client, 10*time.Minute)
	s := &Source{
		td:       td,
		factory:  f,
		pods:     f.Core().V1().Pods().Lister(),
		services: f.Core().V1().Services().Lister(),
		slices:   f.Discovery().V1().EndpointSlices().Lister(),
		changed:  make(chan struct{}, 1),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.notify() },
		UpdateFunc: func(any, any) { s.notify() },
		DeleteFunc: func(any) { s.notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Core().V1().Pods().Informer(), f.Core().V1().Services().Informer(), f.Discovery().V1().EndpointSlices().Informer(),
	} {
		_, _ = inf.AddEventHandler(h)
	}
	return s
}

// Start runs the informers until ctx ends and returns once their caches
// hold the API's current state.
func (s *Source) Start(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	for typ, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("workloads: %v informer did not sync: %w", typ, ctx.Err())
		}
	}
	return nil
}

// Changed receives after any change to pods, services or slices; changes
// that come in a burst are one receive.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Generation counts the changes seen.
func (s *Source) Generation() uint64 { return s.gen.Load() }

func (s *Source) notify() {
	s.gen.Add(1)
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Workloads is View in the shape the control plane takes
// (controlplane.WorkloadSource).
func (s *Source) Workloads() ([]snapshot.Workload, map[snapshot.ServiceKey]string, uint64, error) {
	gen := s.Generation()
	v, err := s.View()
	return v.Workloads, v.VIPs, gen, err
}

// View is the registry as the snapshot builder takes it.
type View struct {
	Workloads []snapshot.Workload
	// VIPs are the ClusterIPs of those Services (none for headless ones).
	VIPs map[snapshot.ServiceKey]string
	// Services are the Services with at least one mesh workload; a
	// Service of pods without the sidecar is no mesh service.
	Services []snapshot.ServiceKey
}

// View computes the registry from the informers' caches.
func (s *Source) View() (View, error) {
	svcs, err := s.services.List(labels.Everything())
	if err != nil {
		return View{}, err
	}
	v := View{VIPs: map[snapshot.ServiceKey]string{}}
	byKey := map[snapshot.ServiceKey]*corev1.Service{}
	for _, svc := range svcs {
		byKey[snapshot.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}] = svc
	}
	eps, err := s.slices.List(labels.Everything())
	if err != nil {
		return View{}, err
	}
	seen := map[string]bool{}
	for _, es := range eps {
		name := es.Labels[discoveryv1.LabelServiceName]
		k := snapshot.ServiceKey{Namespace: es.Namespace, Name: name}
		svc := byKey[k]
		if name == "" || svc == nil {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
				continue
			}
			pod, err := s.pods.Pods(es.Namespace).Get(ep.TargetRef.Name)
			if err != nil || pod.Annotations[inject.AnnotationStatus] == "" || pod.Status.PodIP == "" {
				continue // not a mesh workload (yet)
			}
			inst := pod.Namespace + "/" + pod.Name + "/" + name
			if seen[inst] {
				continue // listed by two slices during a change
			}
			seen[inst] = true
			w, err := s.workload(pod, svc, ep)
			if err != nil {
				continue
			}
			v.Workloads = append(v.Workloads, w)
			if _, ok := v.VIPs[k]; !ok && !slices.Contains(v.Services, k) {
				v.Services = append(v.Services, k)
				if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
					if _, err := netip.ParseAddr(ip); err == nil {
						v.VIPs[k] = ip
					}
				}
			}
		}
	}
	slices.SortFunc(v.Services, func(a, b snapshot.ServiceKey) int { return cmp.Compare(a.String(), b.String()) })
	slices.SortFunc(v.Workloads, func(a, b snapshot.Workload) int { return cmp.Compare(a.Instance, b.Instance) })
	return v, nil
}

func (s *Source) workload(pod *corev1.Pod, svc *corev1.Service, ep discoveryv1.Endpoint) (snapshot.Workload, error) {
	sa := cmp.Or(pod.Spec.ServiceAccountName, "default")
	id, err := spiffeid.FromSegments(s.td, "ns", pod.Namespace, "sa", sa)
	if err != nil {
		return snapshot.Workload{}, err
	}
	ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
	// The pod's own address (the slice's may be a node's view of it).
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		return snapshot.Workload{}, err
	}
	port := uint16(inject.InboundPort)
	if v := pod.Annotations[inject.AnnotationInboundPort]; v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return snapshot.Workload{}, fmt.Errorf("pod %s/%s: annotation %s: %q is not a port", pod.Namespace, pod.Name, inject.AnnotationInboundPort, v)
		}
		port = uint16(n)
	}
	return snapshot.Workload{
		Instance:      pod.Namespace + "/" + pod.Name + "/" + svc.Name,
		SPIFFEID:      id.String(),
		Service:       svc.Name,
		Namespace:     pod.Namespace,
		AdvertiseAddr: netip.AddrPortFrom(ip, port).String(),
		Protocol:      protocolOf(pod, svc),
		Labels:        pod.Labels,
		Connected:     ready,
	}, nil
}

// protocolOf: the pod's trellis.dev/protocol annotation, else the
// Service's first port's appProtocol when it names one Trellis knows,
// else http.
func protocolOf(pod *corev1.Pod, svc *corev1.Service) string {
	if p := pod.Annotations[inject.AnnotationProtocol]; p != "" {
		return p
	}
	for _, port := range svc.Spec.Ports {
		if port.AppProtocol == nil {
			continue
		}
		switch ap := *port.AppProtocol; ap {
		case "http", "http2", "grpc", "tcp":
			return ap
		case "kubernetes.io/h2c":
			return "http2"
		}
	}
	return "http"
}
