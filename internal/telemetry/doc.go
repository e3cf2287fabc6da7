// Package telemetry holds what proxies, the collector and sinks share about
// audit and access events: the durable log's record type and the small
// interfaces between the log, the collector and the sinks. Subpackages:
// eventlog (the hash-chained, segmented log), sink (delivery to SIEMs),
// collector (the gRPC receiver), and the proxy-side emitter.
//
// It must not depend on the roles, the data plane or the store; it stands
// on the protocol types alone.
package telemetry
