package anomaly

import (
	"math"
	"slices"
	"strings"
	"time"
)

// riseState follows an edge's volume over the day: requests per 5-minute
// slot over the last hour, and per hour of the day a baseline of the
// hour's volume across days.
type riseState struct {
	slots     [12]float64
	slot      int
	slotEnd   time.Time
	hourSum   float64 // the clock hour so far
	hour      int     // its hour of the day
	partial   bool    // the hour began before the edge was seen
	profile   [24]float64
	seenHours [24]int
}

const riseSlot = 5 * time.Minute

// latencySample is how many requests a p99 is judged over.
const latencySample = 2000

// Tick closes every interval that ended by now and runs the interval
// detectors on it. The collector calls it every interval; the simulator
// after each interval's reports.
func (e *Engine) Tick(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nextTick.IsZero() {
		e.nextTick = now.Add(e.cfg.Interval)
		return
	}
	if now.Before(e.nextTick) {
		return
	}
	for !e.nextTick.After(now) {
		e.nextTick = e.nextTick.Add(e.cfg.Interval)
	}
	learned := e.learned(now)
	for k, ed := range e.edges {
		e.tickEdge(k, ed, now, learned)
	}
	for p, c := range e.callers {
		e.tickCaller(p, c, now, learned)
	}
	e.tickServices(now, learned)
	for id, tr := range e.instances {
		if now.Sub(tr.seen) > instanceExpiry {
			delete(e.instances, id)
		}
	}
	e.sweepEpisodes(now)
}

// instanceExpiry is how long a silent instance is remembered.
const instanceExpiry = time.Hour

func (e *Engine) tickEdge(k edgeKey, ed *edgeState, now time.Time, learned bool) {
	cfg := &e.cfg
	x := ed.requests
	// Volume spike.
	z := ed.volume.z(x)
	spike := learned && ed.volume.n >= 30 && z >= cfg.VolumeZ && x >= cfg.VolumeFactor*ed.volume.mean && x >= cfg.MinRequests
	if spike {
		e.fire(now, Alert{Detector: DetectorVolumeSpike, Severity: SeverityMedium, Principal: k.principal(), Service: k.service(),
			Explanation: explain("%s made %.0f requests to %s in %s, %.1fx its usual %.1f (robust z %.1f >= %.0f)", k.principal(), x, k.service(), cfg.Interval, x/max(ed.volume.mean, 1), ed.volume.mean, z, cfg.VolumeZ),
			Baseline:    ed.volume.mean, Observed: x, Threshold: max(cfg.VolumeFactor*ed.volume.mean, ed.volume.mean+cfg.VolumeZ*(1.4826*ed.volume.dev+1))})
	}
	ed.volume.update(x, e.a, spike)

	// Error ratio and p99, with enough requests to mean something.
	if x >= cfg.MinRequests {
		r := ed.failures / x
		base := ed.errRatio.mean
		bad := learned && ed.errRatio.n >= 30 && r >= cfg.ErrorRatioMin && r >= cfg.ErrorRatioFactor*base+0.02
		if bad {
			e.fire(now, Alert{Detector: DetectorErrorRatio, Severity: SeverityMedium, Principal: k.principal(), Service: k.service(),
				Explanation: explain("%.0f%% of %s's %.0f requests to %s failed (5xx) in %s; usually %.1f%%", 100*r, k.principal(), x, k.service(), cfg.Interval, 100*base),
				Baseline:    base, Observed: r, Threshold: max(cfg.ErrorRatioMin, cfg.ErrorRatioFactor*base+0.02)})
		}
		ed.errRatio.update(r, e.a, bad)
	}
	// p99 over enough requests to have a tail: the intervals' counts
	// add up until latencySample requests.
	if len(ed.latency) > 0 {
		if len(ed.latWin) != len(ed.latency) {
			ed.latWin = make([]float64, len(ed.latency))
		}
		var n float64
		for i, c := range ed.latency {
			ed.latWin[i] += c
			n += ed.latWin[i]
		}
		if p, ok := quantile(ed.latWin, ed.bounds, 0.99); ok && n >= latencySample {
			clear(ed.latWin)
			// Judged in log2 space: a p99 that jumps between buckets is
			// its normal spread, a p99 many times its usual and beyond
			// that spread is a shift.
			lp := math.Log2(p)
			base := ed.p99.mean
			limit := base + max(math.Log2(cfg.LatencyFactor), 4*1.4826*ed.p99.dev)
			slow := learned && ed.p99.n >= 20 && lp >= limit && p >= math.Exp2(base)+0.05
			if slow {
				e.fire(now, Alert{Detector: DetectorLatency, Severity: SeverityLow, Principal: k.principal(), Service: k.service(),
					Explanation: explain("p99 of %s -> %s was %.0f ms over its last %.0f requests; usually %.0f ms", k.principal(), k.service(), 1000*p, n, 1000*math.Exp2(base)),
					Baseline:    math.Exp2(base), Observed: p, Threshold: math.Exp2(limit)})
			}
			if ed.p99.n == 0 {
				ed.p99.mean, ed.p99.n = lp, 1
			} else {
				ed.p99.update(lp, 0.1, slow)
			}
		}
	}
	e.tickRise(k, ed, now, learned)
	ed.requests, ed.failures, ed.denied = 0, 0, 0
	clear(ed.latency)
}

// tickRise folds the interval's requests into the edge's 5-minute slots
// and hour, and compares the last hour with the same hours of previous
// days: a rise too slow for the moving average shows there.
func (e *Engine) tickRise(k edgeKey, ed *edgeState, now time.Time, learned bool) {
	r := &ed.rise
	if r.slotEnd.IsZero() {
		r.slotEnd = now.Truncate(riseSlot).Add(riseSlot)
		r.hour, r.partial = now.UTC().Hour(), true
	}
	h := now.UTC().Hour()
	if r.hour != h {
		if !r.partial {
			// Close the hour: fold it into that hour's baseline, clipped
			// while the hour itself was anomalous.
			v := r.hourSum
			if r.seenHours[r.hour] > 0 && v > e.cfg.RiseFactor*r.profile[r.hour] {
				v = e.cfg.RiseFactor * r.profile[r.hour]
			}
			if r.seenHours[r.hour] == 0 {
				r.profile[r.hour] = v
			} else {
				r.profile[r.hour] += 0.3 * (v - r.profile[r.hour])
			}
			r.seenHours[r.hour]++
		}
		r.hour, r.hourSum, r.partial = h, 0, false
	}
	r.hourSum += ed.requests
	r.slots[r.slot] += ed.requests
	if now.Before(r.slotEnd) {
		return
	}
	// A slot ended: judge the trailing hour.
	var last float64
	for _, s := range r.slots {
		last += s
	}
	r.slot = (r.slot + 1) % len(r.slots)
	r.slots[r.slot] = 0
	r.slotEnd = now.Truncate(riseSlot).Add(riseSlot)
	prev := (h + 23) % 24
	if !learned || r.seenHours[h] == 0 || r.seenHours[prev] == 0 {
		return
	}
	// The expected trailing hour: this and the previous hour's baselines,
	// weighted by how much of each the last 60 minutes cover.
	f := float64(now.UTC().Minute()) / 60
	expect := f*r.profile[h] + (1-f)*r.profile[prev]
	if last >= e.cfg.RiseFactor*expect && last-expect >= 10*e.cfg.MinRequests {
		e.fire(now, Alert{Detector: DetectorVolumeRise, Severity: SeverityMedium, Principal: k.principal(), Service: k.service(),
			Explanation: explain("%s made %.0f requests to %s in the last hour, %.1fx the %.0f of this time of day on previous days", k.principal(), last, k.service(), last/max(expect, 1), expect),
			Baseline:    expect, Observed: last, Threshold: e.cfg.RiseFactor * expect})
	}
}

func (e *Engine) tickCaller(p string, c *callerState, now time.Time, learned bool) {
	cfg := &e.cfg
	x := c.denied
	z := c.deniedB.z(x)
	burst := c.deniedB.n >= 6 && x >= cfg.DenyBurstMin && z >= cfg.DenyBurstZ
	scanning := e.fanOutCaller(p, c, now, learned)
	if burst && !scanning {
		e.fire(now, Alert{Detector: DetectorDenyBurst, Severity: SeverityHigh, Principal: p,
			Explanation: explain("%s was denied %.0f times in %s; usually %.1f (robust z %.1f >= %.0f)", p, x, cfg.Interval, c.deniedB.mean, z, cfg.DenyBurstZ),
			Baseline:    c.deniedB.mean, Observed: x, Threshold: max(cfg.DenyBurstMin, c.deniedB.mean+cfg.DenyBurstZ*(1.4826*c.deniedB.dev+math1(c.deniedB.mean)))})
	}
	c.deniedB.update(x, e.a, burst)
	c.denied = 0

	// The new edges and paths: one alert each after they waited one more
	// interval end (a scan's parts reach the collector over more than one
	// interval), unless the caller is scanning: then the fan-out alert
	// covers them.
	if scanning {
		c.held, c.heldTicks = nil, nil
		return
	}
	keep, keepTicks := c.held[:0], c.heldTicks[:0]
	for i, a := range c.held {
		if c.heldTicks[i] >= 1 {
			e.fire(now, a)
			continue
		}
		keep, keepTicks = append(keep, a), append(keepTicks, c.heldTicks[i]+1)
	}
	c.held, c.heldTicks = keep, keepTicks
}

// fanOutCaller judges one caller's reach over FanOutWindow: many services
// or paths it never called before is a scan, raised once per episode. It
// reports whether the caller is scanning (this interval or in an
// episode under way), so that the scan's parts (new edges, new paths,
// denials) do not alert one by one.
func (e *Engine) fanOutCaller(p string, c *callerState, now time.Time, learned bool) bool {
	cfg := &e.cfg
	cut := now.Add(-cfg.FanOutWindow)
	c.newTarget = slices.DeleteFunc(c.newTarget, func(s stamped) bool { return s.at.Before(cut) })
	c.newPaths = slices.DeleteFunc(c.newPaths, func(s stamped) bool { return s.at.Before(cut) })
	if !learned {
		return false
	}
	scanning := false
	if len(c.newTarget) >= cfg.FanOut {
		var ts []string
		for _, s := range c.newTarget {
			ts = append(ts, s.what)
		}
		scanning = true
		e.fire(now, Alert{Detector: DetectorFanOut, Severity: SeverityHigh, Principal: p, Detail: "scan",
			Explanation: explain("%s called %d services it never called before within %s: %s", p, len(ts), cfg.FanOutWindow, strings.Join(ts, ", ")),
			Observed:    float64(len(ts)), Threshold: float64(cfg.FanOut)})
	} else if len(c.newPaths) >= cfg.FanOutPaths {
		scanning = true
		e.fire(now, Alert{Detector: DetectorFanOut, Severity: SeverityHigh, Principal: p, Detail: "scan",
			Explanation: explain("%s called %d path shapes it never called before within %s, e.g. %s", p, len(c.newPaths), cfg.FanOutWindow, c.newPaths[0].what),
			Observed:    float64(len(c.newPaths)), Threshold: float64(cfg.FanOutPaths)})
	}
	if ep := e.episodes[episodeKey{DetectorFanOut, p, "", "scan"}]; ep != nil && now.Sub(ep.lastSeen) <= cfg.Cooldown {
		scanning = true
	}
	return scanning
}

// math1 is the Poisson-like floor of a spread.
func math1(mean float64) float64 { return math.Sqrt(mean) + 1 }

// tickServices judges each service's live instance count against its
// baseline: a surge far beyond any scale-up it had.
func (e *Engine) tickServices(now time.Time, learned bool) {
	for name, s := range e.services {
		n := 0
		for id, seen := range s.instances {
			if now.Sub(seen) <= 3*e.cfg.Interval+time.Second {
				n++
			} else if now.Sub(seen) > instanceExpiry {
				delete(s.instances, id)
			}
		}
		x := float64(n)
		surge := learned && s.count.n >= 30 && x >= 3*s.count.mean && x-s.count.mean >= 3
		if surge {
			e.fire(now, Alert{Detector: DetectorInstanceSurge, Severity: SeverityMedium, Principal: name, Service: name,
				Explanation: explain("%s has %d instances reporting; usually %.1f", name, n, s.count.mean),
				Baseline:    s.count.mean, Observed: x, Threshold: 3 * s.count.mean})
		}
		s.count.update(x, e.a, surge)
	}
}

// quantile estimates the q-quantile of per-bucket counts as the upper
// bound of the bucket it falls in (the last bound for +Inf).
func quantile(counts, bounds []float64, q float64) (float64, bool) {
	var total float64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(bounds) == 0 {
		return 0, false
	}
	need := q * total
	var acc float64
	for i, c := range counts {
		acc += c
		if acc >= need {
			if i < len(bounds) {
				return bounds[i], true
			}
			return bounds[len(bounds)-1], true
		}
	}
	return bounds[len(bounds)-1], true
}
