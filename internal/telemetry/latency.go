package telemetry

// LatencyBounds are the upper bounds, in seconds, of the request latency
// buckets: the proxy's trellis_request_duration_seconds histogram and the
// TrafficStats it reports use them, and the collector's graph and
// trellis_mesh_request_duration_seconds expect them (reports with other
// bounds count without latency). Extend only at the end.
var LatencyBounds = [...]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
