package anomaly

import (
	"fmt"
	"time"
)

// Detector names, as in trellis_anomalies_total{detector} and the audit
// events' kind "anomaly.<detector>".
const (
	DetectorNewEdge       = "new_edge"
	DetectorNewPath       = "new_path"
	DetectorDenyBurst     = "deny_burst"
	DetectorErrorRatio    = "error_ratio"
	DetectorLatency       = "latency_shift"
	DetectorVolumeSpike   = "volume_spike"
	DetectorVolumeRise    = "volume_rise"
	DetectorFanOut        = "fan_out"
	DetectorNewAddress    = "new_address"
	DetectorInstanceSurge = "instance_surge"
)

// Detectors lists every detector, for metrics with every label present.
var Detectors = []string{DetectorNewEdge, DetectorNewPath, DetectorDenyBurst, DetectorErrorRatio, DetectorLatency,
	DetectorVolumeSpike, DetectorVolumeRise, DetectorFanOut, DetectorNewAddress, DetectorInstanceSurge}

// Severities.
const (
	SeverityLow    = "low"
	SeverityMedium = "medium"
	SeverityHigh   = "high"
)

// Alert is one anomaly episode's first occurrence. Its JSON form is what
// trellis alerts -o json prints.
type Alert struct {
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Principal is who the anomaly is about: a calling service
	// (service.namespace, "unknown.namespace" for callers without a
	// known service) or a SPIFFE ID.
	Principal string `json:"principal"`
	// Service is the called service (service.namespace), when there is
	// one.
	Service string `json:"service,omitempty"`
	// Detail narrows the subject: a path shape, a service list, an
	// address.
	Detail      string    `json:"detail,omitempty"`
	Started     time.Time `json:"started"`
	Explanation string    `json:"explanation"`
	Baseline    float64   `json:"baseline"`
	Observed    float64   `json:"observed"`
	Threshold   float64   `json:"threshold"`
}

// episode is an alert's condition while it lasts.
type episode struct {
	started, lastSeen time.Time
}

type episodeKey struct{ detector, principal, service, detail string }

// fire raises an alert unless its episode is under way, in which case it
// only extends it.
func (e *Engine) fire(now time.Time, a Alert) {
	k := episodeKey{a.Detector, a.Principal, a.Service, a.Detail}
	if ep := e.episodes[k]; ep != nil && now.Sub(ep.lastSeen) <= e.cfg.Cooldown {
		ep.lastSeen = now
		return
	}
	e.episodes[k] = &episode{started: now, lastSeen: now}
	a.Started = now
	e.alerts = append(e.alerts, a)
	if len(e.alerts) > maxAlerts {
		e.alerts = e.alerts[len(e.alerts)-maxAlerts:]
	}
	if len(e.pending) < maxAlerts {
		e.pending = append(e.pending, a)
	}
	if e.notify != nil {
		e.notify(a)
	}
}

// maxAlerts bounds the alerts kept in memory.
const maxAlerts = 1000

// sweepEpisodes forgets episodes over for longer than the cooldown.
func (e *Engine) sweepEpisodes(now time.Time) {
	for k, ep := range e.episodes {
		if now.Sub(ep.lastSeen) > e.cfg.Cooldown {
			delete(e.episodes, k)
		}
	}
}

func explain(format string, args ...any) string { return fmt.Sprintf(format, args...) }
