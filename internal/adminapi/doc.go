// Package adminapi is the control plane's HTTP admin API as seen from the
// outside: the wire types and a typed client used by the CLI and by tests.
// The server side lives in internal/controlplane and imports these types;
// this package must not import the control plane.
package adminapi
