// Package metrics is the data path's Prometheus metrics and edge
// statistics: request, duration, TCP, authorization and refusal counters
// on a registry of their own, with per-destination and per-caller label
// children cached so recording a request costs a few atomic adds and no
// allocation, and the cumulative per-caller counters the telemetry
// emitter reports for the service graph (TrafficStats).
//
// It must not depend on the data path's transports (internal/dataplane),
// the proxy role, the control plane, the CA or join-token signer, or the
// store (internal/deptest keeps this).
package metrics
