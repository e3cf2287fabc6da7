// Package sim measures the anomaly detectors (docs/learning.md): a mesh of
// services with diurnal load, rollouts that add paths, scale-ups and
// scale-downs, simulated for days on a virtual clock, with labelled
// attacks injected; it scores every alert against the labels and reports
// each attack class's recall and time to detect, each detector's
// precision, and the false alerts per simulated day. `make eval-detect`
// runs it at full scale; its tests at a reduced one.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/anomaly"
)

// Options size a run.
type Options struct {
	Services       int           // default 100
	Namespaces     int           // default 5
	Days           int           // default 7
	Interval       time.Duration // the stats interval; default 60s
	LearningWindow time.Duration // default 24h
	AttacksPerKind int           // default 10
	Seed           uint64        // default 1
	Detect         anomaly.Config
}

func (o Options) defaults() Options {
	if o.Services == 0 {
		o.Services = 100
	}
	if o.Namespaces == 0 {
		o.Namespaces = 5
	}
	if o.Days == 0 {
		o.Days = 7
	}
	if o.Interval == 0 {
		o.Interval = time.Minute
	}
	if o.LearningWindow == 0 {
		o.LearningWindow = 24 * time.Hour
	}
	if o.AttacksPerKind == 0 {
		o.AttacksPerKind = 10
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	o.Detect.Interval = o.Interval
	if o.Detect.LearningWindow == 0 {
		o.Detect.LearningWindow = o.LearningWindow
	}
	return o
}

// The attack classes.
const (
	AttackScan       = "scanning"
	AttackDenyBurst  = "deny burst"
	AttackLateral    = "lateral move"
	AttackAdminPath  = "admin path"
	AttackExfil      = "slow exfiltration"
	AttackStolenCert = "stolen identity"
)

// Kinds lists the attack classes in report order.
var Kinds = []string{AttackScan, AttackDenyBurst, AttackLateral, AttackAdminPath, AttackExfil, AttackStolenCert}

// detectorsFor are the detectors whose alert counts as detecting a class.
var detectorsFor = map[string][]string{
	AttackScan:       {anomaly.DetectorFanOut, anomaly.DetectorNewEdge, anomaly.DetectorNewPath, anomaly.DetectorDenyBurst},
	AttackDenyBurst:  {anomaly.DetectorDenyBurst},
	AttackLateral:    {anomaly.DetectorNewEdge, anomaly.DetectorFanOut},
	AttackAdminPath:  {anomaly.DetectorNewPath, anomaly.DetectorFanOut, anomaly.DetectorDenyBurst},
	AttackExfil:      {anomaly.DetectorVolumeRise, anomaly.DetectorVolumeSpike},
	AttackStolenCert: {anomaly.DetectorNewAddress},
}

// attack is one labelled injection.
type attack struct {
	kind       string
	src, dst   *service // dst nil when the attack has no single target
	path       string   // the admin path attack's shape
	start, end time.Time
	detectedAt time.Time
}

type service struct {
	name, ns  string
	calls     []*edge
	paths     []string // the shapes it serves: "METHOD /template"
	instances []*instance
	hosts     []string
	target    int // instances wanted
}

func (s *service) ref() string { return s.name + "." + s.ns }

type edge struct {
	src, dst *service
	rate     float64  // mean requests per second at the daily peak
	paths    []string // the shapes the caller uses
	errRate  float64
	boost    func(now time.Time) float64 // attack-driven multiplier, nil normally
}

type instance struct {
	id    string
	since time.Time
	host  string
	// cumulative counters per edge (by caller) and per shape
	edges map[*edge]*edgeCounters
}

type edgeCounters struct {
	requests, failures, denied uint64
	latency                    []uint64
	shapes                     map[string][2]uint64 // requests, denied
}

// bounds are the latency bucket bounds the proxies use (seconds).
var bounds = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Result is one run's scores.
type Result struct {
	Options   Options
	Days      float64 // simulated days after the learning window
	Classes   []ClassScore
	Detectors []DetectorScore
	// FalsePerDay is alerts matching no attack, per day after learning.
	FalsePerDay float64
	// FalseSamples are a few unmatched alerts per detector, to see why.
	FalseSamples []anomaly.Alert
	// Missed describes the attacks no alert detected.
	Missed  []string
	Alerts  int
	Attacks []*attack
	Elapsed time.Duration
}

// ClassScore is one attack class's detection.
type ClassScore struct {
	Kind     string
	Attacks  int
	Detected int
	Recall   float64
	// MedianDetect and MaxDetect are the times from onset to the first
	// matching alert, in stats intervals.
	MedianDetect, MaxDetect float64
}

// DetectorScore is one detector's alerts.
type DetectorScore struct {
	Detector  string
	Alerts    int
	True      int
	Precision float64 // NaN without alerts
}

// Run simulates o and scores the detectors.
func Run(o Options) Result {
	o = o.defaults()
	began := time.Now()
	r := rand.New(rand.NewPCG(o.Seed, o.Seed*7919))
	m := newMesh(o, r)
	var alerts []anomaly.Alert
	eng := anomaly.New(o.Detect, func(a anomaly.Alert) { alerts = append(alerts, a) })
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	end := t0.Add(time.Duration(o.Days) * 24 * time.Hour)
	attacks := m.plan(o, r, t0.Add(o.LearningWindow+2*time.Hour), end.Add(-8*time.Hour))
	for _, s := range m.services {
		for _, in := range s.instances {
			in.since = t0
			eng.CertIssued("spiffe://trellis.local/ns/"+s.ns+"/sa/"+s.name, in.host+":40000", t0)
		}
	}
	for now := t0; now.Before(end); now = now.Add(o.Interval) {
		m.events(o, r, eng, now)
		for _, a := range attacks {
			m.attackStep(a, r, eng, now, o.Interval)
		}
		m.traffic(o, r, now)
		m.report(eng, now)
		eng.Tick(now.Add(o.Interval - time.Millisecond))
	}
	return score(o, attacks, alerts, t0, end, time.Since(began))
}

func score(o Options, attacks []*attack, alerts []anomaly.Alert, t0, end time.Time, elapsed time.Duration) Result {
	res := Result{Options: o, Days: end.Sub(t0.Add(o.LearningWindow)).Hours() / 24, Alerts: len(alerts), Elapsed: elapsed, Attacks: attacks}
	trueBy := map[string]int{}
	countBy := map[string]int{}
	falses := 0
	for _, al := range alerts {
		countBy[al.Detector]++
		matched := false
		for _, a := range attacks {
			if !about(a, al) {
				continue
			}
			// Any alert about an attack's subject during it (or its
			// aftermath) is a true alert; it detects the attack when its
			// detector is one of the class's.
			matched = true
			if slices.Contains(detectorsFor[a.kind], al.Detector) && (a.detectedAt.IsZero() || al.Started.Before(a.detectedAt)) {
				a.detectedAt = al.Started
			}
		}
		if matched {
			trueBy[al.Detector]++
		} else {
			falses++
			n := 0
			for _, f := range res.FalseSamples {
				if f.Detector == al.Detector {
					n++
				}
			}
			if n < 3 {
				res.FalseSamples = append(res.FalseSamples, al)
			}
		}
	}
	for _, k := range Kinds {
		cs := ClassScore{Kind: k}
		var ttd []float64
		for _, a := range attacks {
			if a.kind != k {
				continue
			}
			cs.Attacks++
			if !a.detectedAt.IsZero() {
				cs.Detected++
				ttd = append(ttd, a.detectedAt.Sub(a.start).Seconds()/o.Interval.Seconds())
			} else {
				dst := ""
				if a.dst != nil {
					dst = " -> " + a.dst.ref()
				}
				res.Missed = append(res.Missed, fmt.Sprintf("%s by %s%s at %s", a.kind, a.src.ref(), dst, a.start.Format("Jan 2 15:04")))
			}
		}
		if cs.Attacks > 0 {
			cs.Recall = float64(cs.Detected) / float64(cs.Attacks)
		}
		if len(ttd) > 0 {
			slices.Sort(ttd)
			cs.MedianDetect, cs.MaxDetect = ttd[len(ttd)/2], ttd[len(ttd)-1]
		}
		res.Classes = append(res.Classes, cs)
	}
	for _, d := range anomaly.Detectors {
		ds := DetectorScore{Detector: d, Alerts: countBy[d], True: trueBy[d], Precision: math.NaN()}
		if ds.Alerts > 0 {
			ds.Precision = float64(ds.True) / float64(ds.Alerts)
		}
		res.Detectors = append(res.Detectors, ds)
	}
	res.FalsePerDay = float64(falses) / res.Days
	return res
}

// aftermath is how long after an attack's end alerts about its subject
// still belong to it (the edges and paths it left behind).
const aftermath = 30 * time.Minute

// about reports whether alert al is about attack a: its source (and
// target, when both name one), between its start and aftermath after
// its end.
func about(a *attack, al anomaly.Alert) bool {
	if al.Started.Before(a.start) || al.Started.After(a.end.Add(aftermath)) {
		return false
	}
	if a.kind == AttackStolenCert {
		return al.Principal == identity(a.src)
	}
	if al.Principal != a.src.ref() {
		return false
	}
	if a.dst != nil && al.Service != "" && a.kind != AttackScan {
		return al.Service == a.dst.ref()
	}
	return true
}

func fmtDur(d time.Duration) string { return fmt.Sprint(d.Round(time.Second)) }

// pts is a Timestamp.
func pts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

var _ = pb.TrafficStats{}
