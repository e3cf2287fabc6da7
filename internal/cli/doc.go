// Package cli is the trellis command line: flag parsing and wiring for every
// role (control, proxy, up) and every user command (apply, get, delete,
// token, policy, version). main only calls Main.
package cli
