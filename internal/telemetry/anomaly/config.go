package anomaly

import "time"

// Config holds the detectors' thresholds. Zero values mean the defaults
// (Defaults).
type Config struct {
	// Interval is the length of one observation: the proxies' stats
	// interval. Default 10s.
	Interval time.Duration
	// LearningWindow is how long after the first traffic new edges and
	// paths are baseline, not anomalies. Default 24h.
	LearningWindow time.Duration
	// Cooldown ends an episode: an alert's condition absent this long
	// lets the next occurrence fire again. Default 30m.
	Cooldown time.Duration
	// RolloutGrace attributes paths first seen this soon after a
	// service's instances were replaced (a rollout) to the rollout.
	// Default 30m.
	RolloutGrace time.Duration
	// HalfLife of the baselines' moving averages. Default 2h.
	HalfLife time.Duration

	// DenyBurstZ and DenyBurstMin: a caller's denials in one interval
	// alert at this robust z-score and count. Defaults 6 and 10.
	DenyBurstZ   float64
	DenyBurstMin float64
	// ErrorRatioMin: an edge's 5xx ratio alerts above this, and above
	// ErrorRatioFactor times its baseline, with at least MinRequests
	// requests in the interval. Defaults 0.2, 4, 20.
	ErrorRatioMin    float64
	ErrorRatioFactor float64
	MinRequests      float64
	// LatencyFactor: an edge's p99 in one interval alerts above this
	// multiple of its baseline p99 (and 50ms more). Default 4.
	LatencyFactor float64
	// VolumeZ and VolumeFactor: an edge's requests in one interval alert
	// at this robust z-score and multiple of the baseline. Defaults 8
	// and 4.
	VolumeZ      float64
	VolumeFactor float64
	// RiseFactor: an edge's requests over the last hour alert at this
	// multiple of the same hour's volume on the previous days (a slow
	// rise the moving average would absorb). Default 1.8.
	RiseFactor float64
	// FanOut: one caller reaching this many services, or FanOutPaths
	// path templates, it never called before within FanOutWindow.
	// Defaults 3, 8 and 10m.
	FanOut       int
	FanOutPaths  int
	FanOutWindow time.Duration
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	set := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	setD(&c.Interval, 10*time.Second)
	setD(&c.LearningWindow, 24*time.Hour)
	setD(&c.Cooldown, 30*time.Minute)
	setD(&c.RolloutGrace, 30*time.Minute)
	setD(&c.HalfLife, 2*time.Hour)
	setD(&c.FanOutWindow, 10*time.Minute)
	set(&c.DenyBurstZ, 6)
	set(&c.DenyBurstMin, 10)
	set(&c.ErrorRatioMin, 0.2)
	set(&c.ErrorRatioFactor, 4)
	set(&c.MinRequests, 20)
	set(&c.LatencyFactor, 4)
	set(&c.VolumeZ, 8)
	set(&c.VolumeFactor, 4)
	set(&c.RiseFactor, 1.8)
	if c.FanOut == 0 {
		c.FanOut = 3
	}
	if c.FanOutPaths == 0 {
		c.FanOutPaths = 8
	}
	return c
}
