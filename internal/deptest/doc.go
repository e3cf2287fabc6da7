// Package deptest holds no code, only a test: it keeps the dependency
// rules of docs/architecture.md, failing with the offending import chain
// when
//
//   - the data plane (internal/proxy and its subpackages, internal/policy,
//     internal/workloadcert, internal/identity) depends on the CA signer
//     (internal/meshca), the join-token signer (internal/jointoken), the
//     store (internal/store, go.etcd.io/bbolt), the control plane or
//     k8s.io/client-go;
//   - internal/identity depends on any other package of the module, or
//     internal/policy on internal/identity;
//   - policy analysis (internal/policy/analysis) depends on the admin API
//     client, the control plane, the store or the signers;
//   - the proxy registry (internal/controlplane/registry) or the VIP
//     allocator (internal/controlplane/vips) depends on the control plane
//     package itself, the CA or join-token signer, a store backend or the
//     data plane, or the allocator on the registry;
//   - the CA (internal/meshca) depends on the control plane or its
//     subpackages, the store or the data plane;
//   - the health findings of trellis check (internal/meshhealth) depend on
//     the control plane, the store, the signers, the proxy or the data plane;
//   - the admin API's text views (internal/adminview) depend on the
//     control plane, the store, the signers, the proxy or the data plane;
//   - the admin-token service (internal/controlplane/admintokens) depends
//     on the control plane package itself, its other subpackages, the
//     signers, a store backend, Kubernetes or the data plane;
//   - the admin tokens' Kubernetes records
//     (internal/kube/admintokenrecords) depend on the control plane's
//     server or its other subpackages, a store backend, the signers or
//     the data plane;
//   - the permission check (internal/adminauth) depends on the control
//     plane, the store, the signers, the proxy or the admin API types;
//   - the collector role (internal/collectord) depends on the proxy, the CA
//     or the join-token signer;
//   - any role package (controlplane, proxy, collectord, gateway) depends
//     on another role.
//
// Only rules live here; nothing may import this package.
package deptest
