// Package pipeline assembles the durable half of a collector: the
// hash-chained event log under DATA_DIR/events, the Telemetry gRPC service
// (collector.Server) appending to it, and one sink.Deliverer per
// --audit-sink URL reading from it. The control plane embeds one; `trellis
// collector` runs one on its own.
//
// It must not depend on the control plane, the proxy or the store: the
// control plane and trellis collector both embed it.
package pipeline
