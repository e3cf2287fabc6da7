// Package adminauth is who may do what on the control plane's admin API:
// the permissions (one per class of endpoint), the roles that grant them
// (viewer, operator, security-admin; the bootstrap admin.token is root),
// the Principal a request was authenticated as, and Authorize, the one
// check every handler (the admin API, a future console) makes with a
// resolved principal.
//
// It decides from what it is given and holds no state: it must not depend
// on the control plane, the store, the signers or the proxy, so any HTTP
// front end can import it.
package adminauth
