// Package e2e runs Trellis as real processes: its tests build the trellis
// binary, start control planes as subprocesses on free ports and drive them
// with the CLI as a user would, over the same files, environment variables
// and signals. It has no API; nothing imports it.
package e2e
