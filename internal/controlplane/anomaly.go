package controlplane

import (
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
)

// resourcesChanged follows a change of the resources: a new push round,
// and the Mesh's anomaly thresholds to the embedded collector.
func (s *Server) resourcesChanged() {
	s.push.kick()
	s.applyAnomalyConfig()
}

// applyAnomalyConfig gives the embedded collector's detectors the Mesh's
// spec.anomaly, when it changed.
func (s *Server) applyAnomalyConfig() {
	col := s.audit.collector()
	if col == nil {
		return
	}
	mesh, _, _ := s.resCache.State()
	cfg := anomalyConfig(mesh.Anomaly)
	s.anomalyMu.Lock()
	defer s.anomalyMu.Unlock()
	if s.anomalyCfg != nil && *s.anomalyCfg == cfg {
		return
	}
	s.anomalyCfg = &cfg
	col.SetAnomalyConfig(cfg)
}

// anomalyConfig converts the Mesh's thresholds; zero fields keep the
// detectors' defaults.
func anomalyConfig(a resource.MeshAnomaly) anomaly.Config {
	f := func(n int, scale float64) float64 { return float64(n) * scale }
	return anomaly.Config{
		LearningWindow:   a.LearningWindow.Duration,
		Cooldown:         a.Cooldown.Duration,
		RolloutGrace:     a.RolloutGrace.Duration,
		DenyBurstZ:       f(a.DenyBurstZ, 1),
		DenyBurstMin:     f(a.DenyBurstMin, 1),
		ErrorRatioMin:    f(a.ErrorRatioPercent, 0.01),
		LatencyFactor:    f(a.LatencyFactor, 1),
		VolumeZ:          f(a.VolumeZ, 1),
		VolumeFactor:     f(a.VolumeFactor, 1),
		RiseFactor:       f(a.RisePercent, 0.01),
		FanOut:           a.FanOut,
		FanOutPaths:      a.FanOutPaths,
		FanOutWindow:     a.FanOutWindow.Duration,
		Interval:         0,
		HalfLife:         0,
		ErrorRatioFactor: 0,
		MinRequests:      0,
	}
}
