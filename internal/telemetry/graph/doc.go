// Package graph turns the proxies' cumulative traffic counters
// (TrafficStats in api/trellis/v1alpha1/telemetry.proto) into the service
// graph over a sliding window (adminapi.Graph) and into mesh-wide
// Prometheus metrics (trellis_mesh_*). The collector feeds it one report
// per proxy every few seconds and serves what it computes; only the
// collector and its tests import it.
//
// # Window arithmetic
//
// For each (instance, edge) the graph keeps timed samples of the
// cumulative counters: those of the last MaxWindow plus one older sample
// as a baseline, at most 256 (a proxy reporting too often gets its
// samples thinned, never the oldest nor the newest). Over a window W
// ending now, an edge's count is the growth of its counters from a
// baseline to the newest sample, where the baseline is the newest sample
// taken at or before now-W; without one, zero counters at counters_since
// when the proxy's counters started inside the window, else the oldest
// sample inside it. A counter lower than in the sample before it means
// the proxy's counters started again: growth then counts from zero, as
// Prometheus' increase() does. An edge new to an instance that had
// reported before (same counters_since) counts from zero at that earlier
// report, since proxies send every edge in every report. An instance
// whose newest report is older than the window contributes nothing. Rates
// divide by W whatever span the samples cover, like a Prometheus rate over
// W.
//
// Figures sum over every instance reporting an edge (the replicas of a
// destination). Latency percentiles are interpolated linearly inside the
// bucket holding the quantile, as Prometheus' histogram_quantile does;
// one that falls in the +Inf bucket reads as the highest finite bound.
// The graph adopts the latency bounds of the first report carrying any,
// for its lifetime: reports with other bounds count requests and the rest
// but leave latency out. Edges with no requests in the window are left
// out of a snapshot; every service that reported within it is a node,
// idle or not.
//
// # Mesh-wide metrics
//
// Per edge, the graph adds every sample's growth over the previous one
// into totals that only grow: a proxy's counter reset or its instance
// expiring (silent for Expire) never lowers them. An expired instance
// that comes back with the same counters is new to the graph, so its
// counts before it went silent are counted again. Totals of edges no live
// instance reports are dropped, least recently updated first, only when
// more than 100000 edges have totals.
//
// # Trust
//
// Reports are untrusted input (a proxy is authenticated, not honest):
// Record validates each one whole before storing any of it, and memory is
// bounded by MaxInstances, 4096 edges per report (8192 kept per
// instance) and 256 samples per edge.
//
// It must not depend on the collector's transport, the roles or the store.
package graph
