// Package cli is the trellis command line: flag parsing and wiring for every
// role (control, proxy, up) and every user command (apply, get, delete,
// token, policy, version). main only calls Main.
//
// It is the only package that wires roles together; no role imports it, and
// it holds no logic of its own beyond flags, reading files and printing
// (views are in internal/adminview, checks in internal/meshhealth, policy
// analysis in internal/policy/analysis). The policy commands are a package
// of their own, internal/cli/policycmd; the errors every command returns
// carry the exit codes of internal/cli/exitcode.
package cli
