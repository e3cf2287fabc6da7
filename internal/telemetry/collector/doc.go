// Package collector is the receiving end of the Telemetry gRPC service
// (api/trellis/v1alpha1/telemetry.proto): it authenticates each proxy's
// event stream by its client certificate, stamps every event with the
// proxy's SPIFFE ID, drops resent events by their per-instance sequence
// numbers, appends the rest to the durable event log and acknowledges
// them. The control plane (which embeds the collector by default) and
// `trellis collector` import it; proxies must not (they use package
// emitter).
package collector
