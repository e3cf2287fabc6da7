// Package admintokens is the control plane's admin-token service: tokens
// with a role (internal/adminauth) and optionally limited to namespaces,
// created, listed and revoked by name through the admin API, and checked
// on every admin call. A token is a random 256-bit secret; its Records
// keep only its SHA-256, compared in constant time: the store's
// (StoreRecords, under /admin-tokens/<name>, in the same flat key space
// on every backend) or, in Kubernetes mode, Secrets in the control
// plane's namespace (internal/kube/admintokenrecords), so a token created
// or revoked through one replica holds on every replica. The bootstrap
// admin.token is not one of these: the control plane checks it first.
//
// Errors wrap adminapi.ErrNotFound or ErrConflict, ErrUnauthenticated, or
// are a *FieldError; the control plane maps them to HTTP statuses. Only
// the control plane, the Kubernetes records (for Record) and tests import
// it. It must not depend on the control plane's server, the signers, a
// store backend, Kubernetes or the data plane.
package admintokens
