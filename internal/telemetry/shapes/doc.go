// Package shapes is the collector's memory of request shapes per edge
// (docs/learning.md): for each caller service -> service, the requests
// seen by method and path template, with counts and first and last seen.
// Proxies report cumulative counters per instance (EdgeStats.shapes); the
// store turns them into growth, so restarts of proxies and of the
// collector count nothing twice. It collapses literal path segments of
// high cardinality into {id}, which the proxies' per-request inference
// cannot see, bounds its memory (shapes per edge, edges, instances) with
// an explicit overflow count per edge, and persists itself to a file.
package shapes
