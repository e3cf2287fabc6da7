package admission

import (
	"log/slog"
	"strings"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
)

// AuditRecorder counts what audit-mode policies would have decided (the
// data path's metrics). It must not block.
type AuditRecorder interface {
	AuditDecided(policy string, allow bool)
}

// PolicyAuthorizer decides with the policy engine compiled into each
// Snapshot, for one workload. Every deny and every audit-mode would-deny
// becomes an audit event (Events, shipped to the collector); the log line
// is at debug level, since a log line per denied request at info would
// flood logs under attack.
type PolicyAuthorizer struct {
	Workload policy.Workload
	Log      *slog.Logger
	// Port is the application's port, the destination port policies'
	// `ports` conditions match.
	Port int
	// Events, when set, receives an audit event for every deny and every
	// audit-mode would-deny. It must not block.
	Events func(*pb.Event)
	// Metrics, when set, counts audit-mode decisions.
	Metrics AuditRecorder
	// Audits counts audit-mode would-deny events.
	Audits atomic.Int64
	// Ingress decides for an ingress gateway: where only the mesh default
	// would decide (no policy denied the request, and none of the
	// gateway's requires an ALLOW match), the gateway's routes already
	// did, and the request is allowed. DENY policies and ALLOW policies
	// selecting the gateway apply as anywhere.
	Ingress bool
}

// Authorize implements Authorizer.
func (a *PolicyAuthorizer) Authorize(snap *meshconfig.Snapshot, req *Request) Decision {
	if snap == nil || snap.Engine == nil {
		return Decision{Allow: false, Rule: -1, Reason: "no configuration"}
	}
	pr := a.request(snap, req)
	principal := pr.Principal
	var audit func(policy.AuditResult)
	var auditDenied string
	if snap.Engine.Len() > 0 {
		audit = func(ar policy.AuditResult) {
			if a.Metrics != nil {
				a.Metrics.AuditDecided(ar.Policy, ar.WouldAllow)
			}
			if ar.WouldAllow {
				return
			}
			a.Audits.Add(1)
			if auditDenied == "" {
				auditDenied = ar.Policy
			}
			a.emit("authz.audit_would_deny", principal, pr.SourceService, req, ar.Policy, ar.Rule, ar.Reason)
			a.Log.Debug("audit: would deny", "event", "authz.audit_would_deny", "policy", ar.Policy, "rule", ar.Rule, "reason", ar.Reason,
				"source", principal, "destination_service", a.Workload.Service, "destination_namespace", a.Workload.Namespace,
				"method", req.Method, "path", req.Path)
		}
	}
	d := snap.Engine.DecideAudit(&a.Workload, &pr, audit)
	if a.Ingress && d.Cause == policy.CauseMeshDefault {
		d.Allow, d.Reason = true, "ingress: routed by a GatewayRoute, no policy denies"
	}
	if !d.Allow {
		a.emit("authz.deny", principal, pr.SourceService, req, d.Policy, d.Rule, d.Reason)
		a.Log.Debug("authorization denied", "event", "authz.deny", "policy", d.Policy, "rule", d.Rule, "reason", d.Reason,
			"source", principal, "destination_service", a.Workload.Service, "destination_namespace", a.Workload.Namespace,
			"protocol", req.Protocol, "method", req.Method, "path", req.Path)
	}
	return Decision{Allow: d.Allow, Policy: d.Policy, Rule: d.Rule, Reason: d.Reason, AuditDenied: auditDenied}
}

// AppendCustom implements CustomLister.
func (a *PolicyAuthorizer) AppendCustom(dst []policy.CustomMatch, snap *meshconfig.Snapshot, req *Request) []policy.CustomMatch {
	if snap == nil || snap.Engine == nil {
		return dst
	}
	pr := a.request(snap, req)
	return snap.Engine.AppendCustom(dst, &a.Workload, &pr)
}

// CustomDenied implements CustomLister: an audit event like a local
// denial's.
func (a *PolicyAuthorizer) CustomDenied(req *Request, d Decision) {
	principal := req.Principal
	if principal == "" && !req.Source.IsZero() {
		principal = req.Source.String()
	}
	a.emit("authz.deny", principal, "", req, d.Policy, d.Rule, d.Reason)
}

// request is req as the policy engine sees it.
func (a *PolicyAuthorizer) request(snap *meshconfig.Snapshot, req *Request) policy.Request {
	principal := req.Principal
	if principal == "" && !req.Source.IsZero() {
		principal = req.Source.String()
	}
	pr := policy.Request{
		Principal:     principal,
		SourceService: snap.ServiceOf[principal],
		HTTP:          req.Protocol != meshconfig.ProtocolTCP,
		Port:          a.Port,
		Method:        req.Method, // exact: checkMethod refused other spellings
		Path:          req.Path,
		Host:          req.Host,
	}
	if req.Header != nil {
		pr.Header = req.Header.Get
	} else {
		pr.Header = req.GetHeader
	}
	pr.RequestPrincipal, pr.Claim = req.RequestPrincipal, req.Claim
	return pr
}

func (a *PolicyAuthorizer) emit(kind, principal, sourceService string, req *Request, policy string, rule int, reason string) {
	if a.Events == nil {
		return
	}
	decision := "deny"
	a.Events(&pb.Event{
		Time:                 timestamppb.Now(),
		Kind:                 kind,
		SourceId:             principal,
		SourceService:        sourceService,
		SourceNamespace:      namespaceOfID(principal),
		DestinationService:   a.Workload.Service,
		DestinationNamespace: a.Workload.Namespace,
		Protocol:             req.Protocol,
		Method:               req.Method,
		Path:                 req.Path,
		ResponseCode:         responseCodeFor(req.Protocol),
		Decision:             decision,
		Policy:               policy,
		Rule:                 int32(rule),
		Reason:               reason,
		TraceId:              req.traceID(),
	})
}

// responseCodeFor is what a deny answers: 403 for HTTP, 0 (connection
// closed) for TCP.
func responseCodeFor(protocol string) uint32 {
	if protocol == meshconfig.ProtocolTCP {
		return 0
	}
	return 403
}

func (req *Request) traceID() string { return TraceID(req.HeaderValue) }

// TraceID takes a W3C traceparent's trace id from a request's fields,
// when it has one.
func TraceID(get func(string) string) string {
	if get == nil {
		return ""
	}
	tp := get("Traceparent")
	if len(tp) >= 35 && tp[2] == '-' {
		return tp[3:35]
	}
	return ""
}

// namespaceOfID returns NS of spiffe://TD/ns/NS/sa/SA, or "".
func namespaceOfID(id string) string {
	_, rest, ok := strings.Cut(id, "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}
