// Package tracing is the proxies' distributed tracing: reading a
// caller's trace context (W3C traceparent, B3 single and multi headers),
// the sampling decision (the caller's, else the Mesh's root rate), and
// spans exported over OTLP/gRPC with the OpenTelemetry SDK to the
// collector the Mesh names (docs/tracing.md).
//
// Extract and Sample allocate nothing, so a request that is not traced
// costs a header scan; only sampled requests reach the SDK. The data
// plane and the proxy role import it; it imports meshconfig and the
// OpenTelemetry modules only.
package tracing
