// Package emitter is the proxy's side of the Telemetry stream
// (api/trellis/v1alpha1/telemetry.proto): it numbers audit and access
// events, queues them without ever blocking the request path (in memory,
// then in an on-disk spool, then dropping and counting), and delivers them
// to the collector over mutual TLS with resends until each is
// acknowledged. On the same stream it sends the proxy's traffic stats
// periodically. The proxy imports it; it must not import the control
// plane, the collector or the CA.
package emitter
