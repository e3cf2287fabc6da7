package sim

import (
	"testing"
	"time"
)

// The detectors at a reduced scale (30 services, 3 days, 6 attacks of
// each class; make eval-detect runs 100 services for 7 days): the issue's
// targets hold: recall at least 0.9 per class, at most 5 false alerts per
// simulated day, detection within 2 stats intervals of onset (but for the
// slow exfiltration, which is slow by design: within its 8 hours).
func TestReducedScale(t *testing.T) {
	if testing.Short() {
		t.Skip("a simulated 3 days take about 10 s; run without -short")
	}
	res := Run(Options{Services: 30, Namespaces: 3, Days: 3, Interval: time.Minute, LearningWindow: 24 * time.Hour, AttacksPerKind: 6})
	t.Logf("%.1f days after learning, %d alerts, %.2f false/day, in %s", res.Days, res.Alerts, res.FalsePerDay, res.Elapsed)
	for _, c := range res.Classes {
		t.Logf("%-18s recall %.2f (%d/%d), detect median %.1f max %.1f intervals", c.Kind, c.Recall, c.Detected, c.Attacks, c.MedianDetect, c.MaxDetect)
		if c.Recall < 0.9 {
			t.Errorf("%s: recall %.2f, want at least 0.9", c.Kind, c.Recall)
		}
		if c.Kind != AttackExfil && c.MaxDetect > 2 {
			t.Errorf("%s: detected up to %.0f intervals after onset, want at most 2", c.Kind, c.MaxDetect)
		}
		if c.Kind == AttackExfil && c.MaxDetect > 8*60 {
			t.Errorf("%s: detected up to %.0f intervals after onset, want within the attack's 8 hours", c.Kind, c.MaxDetect)
		}
	}
	for _, m := range res.Missed {
		t.Logf("missed: %s", m)
	}
	for _, a := range res.FalseSamples {
		t.Logf("false: %s %s %s %s: %s", a.Detector, a.Started.Format("Jan 2 15:04"), a.Principal, a.Service, a.Explanation)
	}
	for _, d := range res.Detectors {
		t.Logf("%-15s alerts %d true %d precision %.2f", d.Detector, d.Alerts, d.True, d.Precision)
	}
	if res.FalsePerDay > 5 {
		t.Errorf("%.2f false alerts per simulated day, want at most 5", res.FalsePerDay)
	}
}

// The score is honest: with the detectors made blind (thresholds out of
// reach, no learning window end), recall falls to zero.
func TestScoreFailsBlindDetectors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a simulated day")
	}
	res := Run(Options{Services: 10, Namespaces: 2, Days: 2, Interval: time.Minute, LearningWindow: 24 * time.Hour, AttacksPerKind: 3})
	blind := Options{Services: 10, Namespaces: 2, Days: 2, Interval: time.Minute, LearningWindow: 24 * time.Hour, AttacksPerKind: 3}
	blind.Detect.DenyBurstZ, blind.Detect.DenyBurstMin = 1e9, 1e9
	blind.Detect.RiseFactor, blind.Detect.FanOut, blind.Detect.FanOutPaths = 1e9, 1<<30, 1<<30
	blind.Detect.LearningWindow = 1000 * time.Hour
	b := Run(blind)
	for i, c := range b.Classes {
		if c.Kind == AttackStolenCert || c.Kind == AttackLateral || c.Kind == AttackAdminPath || c.Kind == AttackScan {
			// These need the learning window to end.
			if c.Detected != 0 {
				t.Errorf("%s: blind detectors still detected %d", c.Kind, c.Detected)
			}
		}
		if res.Classes[i].Detected == 0 {
			t.Errorf("%s: the normal detectors detected nothing", c.Kind)
		}
	}
}
