package graph

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// reportingWindow is the span of trellis_mesh_proxies_reporting.
const reportingWindow = time.Minute

var edgeLabels = []string{"source_service", "source_namespace", "destination_service", "destination_namespace"}

var (
	requestsDesc = prometheus.NewDesc("trellis_mesh_requests_total",
		"HTTP requests between services, summed over every proxy reporting to the collector (inbound side).", edgeLabels, nil)
	failuresDesc = prometheus.NewDesc("trellis_mesh_request_failures_total",
		"Requests answered 5xx, summed over every proxy.", edgeLabels, nil)
	deniedDesc = prometheus.NewDesc("trellis_mesh_requests_denied_total",
		"Requests refused by authorization (403 from the proxy), summed over every proxy.", edgeLabels, nil)
	mtlsDesc = prometheus.NewDesc("trellis_mesh_mtls_requests_total",
		"Requests that arrived over mutual TLS, summed over every proxy.", edgeLabels, nil)
	durationDesc = prometheus.NewDesc("trellis_mesh_request_duration_seconds",
		"Request durations seen by the called proxies, summed over every proxy whose latency buckets match the collector's. The sum is estimated from bucket midpoints.", edgeLabels, nil)
	reportingDesc = prometheus.NewDesc("trellis_mesh_proxies_reporting",
		"Proxy instances that sent traffic counters within the last minute.", nil, nil)
)

// Describe implements prometheus.Collector.
func (g *Graph) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{requestsDesc, failuresDesc, deniedDesc, mtlsDesc, durationDesc, reportingDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the mesh totals of every edge,
// which never go down (see the package doc).
func (g *Graph) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		k edgeKey
		c counters
	}
	g.mu.Lock()
	now := g.now()
	rows := make([]row, 0, len(g.totals))
	for k, t := range g.totals {
		rows = append(rows, row{k, t.c.clone()})
	}
	bounds := g.bounds
	reporting := 0
	for _, in := range g.instances {
		if in.last.After(now.Add(-reportingWindow)) {
			reporting++
		}
	}
	g.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(reportingDesc, prometheus.GaugeValue, float64(reporting))
	for _, r := range rows {
		lv := []string{r.k.src.Service, r.k.src.Namespace, r.k.dst.Service, r.k.dst.Namespace}
		for _, m := range []struct {
			desc *prometheus.Desc
			n    uint64
		}{{requestsDesc, r.c.requests}, {failuresDesc, r.c.failures}, {deniedDesc, r.c.denied}, {mtlsDesc, r.c.mtls}} {
			ch <- constMetric(m.desc)(prometheus.NewConstMetric(m.desc, prometheus.CounterValue, float64(m.n), lv...))
		}
		if r.c.latency != nil && len(r.c.latency) == len(bounds)+1 {
			count, sum, buckets := histogram(bounds, r.c.latency)
			ch <- constMetric(durationDesc)(prometheus.NewConstHistogram(durationDesc, count, sum, buckets, lv...))
		}
	}
}

// constMetric hands an error (label values are validated on Record, so
// none is expected) to the registry instead of panicking.
func constMetric(desc *prometheus.Desc) func(prometheus.Metric, error) prometheus.Metric {
	return func(m prometheus.Metric, err error) prometheus.Metric {
		if err != nil {
			return prometheus.NewInvalidMetric(desc, err)
		}
		return m
	}
}

// histogram turns counts per bucket into Prometheus' cumulative buckets.
// The sum of observations is unknown: it is estimated with each bucket's
// midpoint (the +Inf bucket at the highest bound), so it grows with the
// counts and _sum/_count reads as an approximate mean.
func histogram(bounds []float64, counts []uint64) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(bounds))
	lower := 0.0
	for i, b := range bounds {
		count = addSat(count, counts[i])
		buckets[b] = count
		sum += float64(counts[i]) * (lower + b) / 2
		lower = b
	}
	count = addSat(count, counts[len(bounds)])
	sum += float64(counts[len(bounds)]) * lower
	return count, sum, buckets
}
