package adminauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Permission is one class of admin API action.
type Permission string

// The permissions. Each admin API route needs exactly one (the control
// plane's route table); docs/admin-access.md lists which.
const (
	// ResourcesRead: get and list resources (policies, Mesh, routes, ...).
	ResourcesRead Permission = "resources.read"
	// ResourcesWrite: apply and delete resources, the Mesh included.
	ResourcesWrite Permission = "resources.write"
	// StatusRead: proxies and their sync state, services, the service
	// graph, learned shapes, anomaly alerts, CA status.
	StatusRead Permission = "status.read"
	// AuditRead: verify the audit event log's hash chain.
	AuditRead Permission = "audit.read"
	// AuditWrite: change where audit events go (sinks). No endpoint does
	// yet (sinks are flags of trellis control); reserved so that one that
	// does cannot land with a weaker permission.
	AuditWrite Permission = "audit.write"
	// JoinTokensRead: list issued join tokens (never the tokens).
	JoinTokensRead Permission = "jointokens.read"
	// JoinTokensWrite: issue and revoke join tokens.
	JoinTokensWrite Permission = "jointokens.write"
	// CAWrite: rotate the CA and retire the old one.
	CAWrite Permission = "ca.write"
	// AdminTokensRead: list admin tokens (never the secrets).
	AdminTokensRead Permission = "admintokens.read"
	// AdminTokensWrite: create and revoke admin tokens.
	AdminTokensWrite Permission = "admintokens.write"
)

// Permissions lists every permission, in the order docs show them.
func Permissions() []Permission {
	return []Permission{ResourcesRead, StatusRead, AuditRead, ResourcesWrite,
		JoinTokensRead, JoinTokensWrite, CAWrite, AuditWrite, AdminTokensRead, AdminTokensWrite}
}

// Role is a named set of permissions an admin token holds.
type Role string

// The roles. Viewer's permissions are in every role; operator adds
// resource writes; security-admin adds credentials, the CA and the audit
// stream but not resource writes (least privilege: whoever mints tokens
// and rotates the CA need not change policies). Root holds every
// permission and is only the bootstrap admin.token, never a created token.
const (
	Viewer        Role = "viewer"
	Operator      Role = "operator"
	SecurityAdmin Role = "security-admin"
	Root          Role = "root"
)

var viewerPerms = []Permission{ResourcesRead, StatusRead, AuditRead}

var rolePerms = map[Role][]Permission{
	Viewer:        viewerPerms,
	Operator:      append(slices.Clone(viewerPerms), ResourcesWrite),
	SecurityAdmin: append(slices.Clone(viewerPerms), JoinTokensRead, JoinTokensWrite, CAWrite, AuditWrite, AdminTokensRead, AdminTokensWrite),
	Root:          Permissions(),
}

// Roles lists the roles a created token may have.
func Roles() []Role { return []Role{Viewer, Operator, SecurityAdmin} }

// ParseRole checks name is a role a created token may have.
func ParseRole(name string) (Role, error) {
	r := Role(name)
	if slices.Contains(Roles(), r) {
		return r, nil
	}
	var names []string
	for _, r := range Roles() {
		names = append(names, string(r))
	}
	return "", fmt.Errorf("role %q: use one of %s", name, strings.Join(names, ", "))
}

// Has reports whether role grants perm.
func (r Role) Has(perm Permission) bool { return slices.Contains(rolePerms[r], perm) }

// Permissions is what role grants.
func (r Role) Permissions() []Permission { return slices.Clone(rolePerms[r]) }

// Principal is who an admin call was authenticated as.
type Principal struct {
	// Name is the token's name; "root" for the bootstrap admin.token.
	Name string
	Role Role
	// Namespaces limits the token to these namespaces; empty means all
	// namespaces and cluster-scoped things.
	Namespaces []string
}

// RootName is the bootstrap admin.token's name in audit events and errors.
const RootName = "root"

// RootPrincipal is the holder of the bootstrap admin.token.
func RootPrincipal() Principal { return Principal{Name: RootName, Role: Root} }

// MeshNamespace is the namespace whose resources may act mesh-wide (a
// policy there with an empty selector protects every workload; the same
// as policy.MeshNamespace). Acting in it is cluster-scoped: no token
// limited to namespaces may, and none is limited to it.
const MeshNamespace = "trellis-system"

// Scoped reports whether p is limited to namespaces.
func (p Principal) Scoped() bool { return len(p.Namespaces) > 0 }

// InNamespace reports whether p may act in namespace ns ("" and
// MeshNamespace are cluster-scoped: only an unscoped principal may).
func (p Principal) InNamespace(ns string) bool {
	if !p.Scoped() {
		return true
	}
	return ns != "" && ns != MeshNamespace && slices.Contains(p.Namespaces, ns)
}

// ForbiddenError is a refusal: it names the principal and what it lacks.
// The admin API answers it with 403.
type ForbiddenError struct {
	Principal  Principal
	Permission Permission
	// Namespace is where the action was refused; "" with Cluster for a
	// cluster-scoped action, "" without it for a missing permission.
	Namespace string
	Cluster   bool
	// Detail, if set, replaces the usual ending (an escalation).
	Detail string
}

func (e *ForbiddenError) Error() string {
	who := fmt.Sprintf("token %q (role %s", e.Principal.Name, e.Principal.Role)
	if e.Principal.Scoped() {
		who += ", namespaces " + strings.Join(e.Principal.Namespaces, ",")
	}
	who += ")"
	switch {
	case e.Detail != "":
		return fmt.Sprintf("forbidden: %s %s", who, e.Detail)
	case e.Cluster:
		return fmt.Sprintf("forbidden: token %q is limited to namespaces %s; permission %s on cluster-scoped things (and in %s, whose resources act mesh-wide) needs a token for all namespaces",
			e.Principal.Name, strings.Join(e.Principal.Namespaces, ","), e.Permission, MeshNamespace)
	case e.Namespace != "":
		return fmt.Sprintf("forbidden: %s lacks permission %s in namespace %s", who, e.Permission, e.Namespace)
	default:
		return fmt.Sprintf("forbidden: %s lacks permission %s", who, e.Permission)
	}
}

// ErrForbidden is matched by every *ForbiddenError (errors.Is).
var ErrForbidden = errors.New("forbidden")

// Is makes errors.Is(err, ErrForbidden) true.
func (e *ForbiddenError) Is(target error) bool { return target == ErrForbidden }

// Authorize is the one permission check: may p do perm in namespace ns?
// Pass ns "" with cluster true for a cluster-scoped action (the Mesh, the
// CA, admin tokens: only a principal for all namespaces may), and ns ""
// with cluster false to ask about the permission alone (a list the caller
// then filters with InNamespace). It returns nil or a *ForbiddenError.
func Authorize(p Principal, perm Permission, ns string, cluster bool) error {
	if !p.Role.Has(perm) {
		return &ForbiddenError{Principal: p, Permission: perm, Namespace: ns}
	}
	switch {
	case !p.Scoped():
		return nil
	case cluster || ns == MeshNamespace:
		return &ForbiddenError{Principal: p, Permission: perm, Cluster: true}
	case ns != "" && !slices.Contains(p.Namespaces, ns):
		return &ForbiddenError{Principal: p, Permission: perm, Namespace: ns}
	}
	return nil
}

// Covers reports whether p holds at least the power of q: every
// permission of q's role, in every namespace q may act in. A principal
// may only create tokens it covers; Covers returns the refusal otherwise.
func (p Principal) Covers(q Principal) error {
	for _, perm := range q.Role.Permissions() {
		if !p.Role.Has(perm) {
			return &ForbiddenError{Principal: p, Permission: perm,
				Detail: fmt.Sprintf("lacks permission %s, which role %s has, so it may not create a token of that role", perm, q.Role)}
		}
	}
	if !p.Scoped() {
		return nil
	}
	if !q.Scoped() {
		return &ForbiddenError{Principal: p, Permission: AdminTokensWrite,
			Detail: "lacks permission admintokens.write for all namespaces: give --namespace with some of its own"}
	}
	for _, ns := range q.Namespaces {
		if !p.InNamespace(ns) {
			return &ForbiddenError{Principal: p, Permission: AdminTokensWrite, Namespace: ns}
		}
	}
	return nil
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
