// Package adminhttp holds what Trellis's HTTP admin APIs (the control
// plane's and the standalone collector's) share: JSON answers and the
// bearer-token guard, a 256-bit random token in DATA_DIR/admin.token
// (0600) compared in constant time.
//
// It must not depend on the control plane, the collector, the store or the
// signers: both roles import it.
package adminhttp
