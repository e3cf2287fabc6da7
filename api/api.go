// Package api holds Trellis's proxy/control-plane protocol: the .proto files
// under trellis/v1alpha1 and the Go generated from them (committed; run
// `make generate` after editing a .proto). The protocol's rules live in the
// .proto comments. This package itself only carries the staleness test.
//
// It depends on nothing.
package api
