package emitter

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The Emitter's metrics are read from its counters at scrape time, so
// Emit pays for atomic adds only. Register the Emitter itself:
// reg.MustRegister(em).
var (
	emittedDesc = prometheus.NewDesc("trellis_telemetry_events_emitted_total",
		"Audit and access events numbered for delivery to the collector.", nil, nil)
	droppedDesc = prometheus.NewDesc("trellis_telemetry_events_dropped_total",
		"Events lost before the collector acknowledged them, by reason: queue_full (memory and spool full), shutdown (no spool, or no room in it, at exit), spool_error (unreadable or unwritable in the spool).",
		[]string{"reason"}, nil)
	ackedDesc = prometheus.NewDesc("trellis_telemetry_events_acked_total",
		"Events the collector acknowledged as durable.", nil, nil)
	spooledDesc = prometheus.NewDesc("trellis_telemetry_events_spooled_total",
		"Events written to the on-disk spool (while the collector was slow or away, or at shutdown).", nil, nil)
	queuedDesc = prometheus.NewDesc("trellis_telemetry_queue_events",
		"Events waiting in memory, in flight included.", nil, nil)
	spoolBytesDesc = prometheus.NewDesc("trellis_telemetry_spool_bytes",
		"Size of the on-disk spool.", nil, nil)
	upDesc = prometheus.NewDesc("trellis_telemetry_stream_up",
		"1 while the telemetry stream to the collector is established.", nil, nil)
	connectsDesc = prometheus.NewDesc("trellis_telemetry_stream_connects_total",
		"Telemetry streams established (the first, then reconnects).", nil, nil)
)

// Describe implements prometheus.Collector.
func (e *Emitter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{emittedDesc, droppedDesc, ackedDesc, spooledDesc, queuedDesc, spoolBytesDesc, upDesc, connectsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Emitter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(emittedDesc, prometheus.CounterValue, float64(e.emitted.Load()))
	for i, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(e.dropped[i].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(ackedDesc, prometheus.CounterValue, float64(e.ackedN.Load()))
	ch <- prometheus.MustNewConstMetric(spooledDesc, prometheus.CounterValue, float64(e.spooled.Load()))
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(e.queued.Load()))
	ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(e.spoolBytes.Load()))
	up := 0.0
	if e.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(connectsDesc, prometheus.CounterValue, float64(e.connects.Load()))
}
