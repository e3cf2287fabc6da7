// Package trellisv1alpha1 is the Go code generated from the Trellis
// proxy/control-plane protocol (identity.proto, config.proto). Do not edit
// the generated files; edit the .proto and run `make generate`.
//
// It depends only on the protobuf and gRPC runtimes; every role imports it.
package trellisv1alpha1
