// Package anomaly is the collector's detector of unusual traffic
// (docs/learning.md): it watches the proxies' traffic reports and the
// certificate events, keeps a baseline per edge, caller and identity, and
// raises an Alert when something departs from it: a new edge or a new
// path on a known edge after the learning window, a burst of denials from
// one caller, a shift in an edge's error ratio or p99 latency, a spike or
// a slow rise in an edge's volume, one identity suddenly calling many
// services or paths, an identity's certificate issued to an unexpected
// address. Every alert fires once per episode, with a cooldown, and
// carries its baseline, the observed value and the threshold.
//
// The Engine runs on the time it is given (Record, Tick), so the
// evaluation simulator (cmd/evaldetect) drives it on a virtual clock.
// It depends on the telemetry protocol and the standard library only.
package anomaly
