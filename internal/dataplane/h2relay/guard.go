package h2relay

import (
	"time"

	"golang.org/x/net/http2"
)

// Limits on what a peer may make the proxy do without useful work. The
// frames counted as control are SETTINGS, PING, PRIORITY, empty DATA
// without END_STREAM and streams refused for exceeding the advertised
// concurrency; a legitimate client sends a handful a second.
const (
	maxControlPerSecond = 1000
	// A PING counts only when no HEADERS or DATA came since the previous
	// one (grpc-go's "ping strike" rule): grpc-go sends a PING with
	// every burst of data it receives to estimate the bandwidth-delay
	// product, thousands a second on a busy connection, and those never
	// count. Pure PINGs are limited like the other control frames.
	maxPingsPerSecond = maxControlPerSecond
	// A connection whose callers reset at least half of the streams
	// they opened within a second, and at least Config.RapidResets, before
	// their response began, is a rapid-reset attack (CVE-2023-44487).
	// Counting per second, not over the connection's life, keeps a
	// long-lived connection from a peer proxy (which carries many
	// callers' cancellations) from adding up to a false alarm.
	defaultRapidResets = 100
)

// guard counts one connection's cheap frames and early resets (reader
// goroutine only).
type guard struct {
	// rapid is Config.RapidResets.
	rapid    int
	second   int64
	controls int
	pings    int
	// traffic: HEADERS or DATA arrived since the last PING.
	traffic bool
	// off: an upstream connection (the proxy chose its peer), never
	// limited.
	off       bool
	streams   int
	premature int
}

// tick starts a new second's counts when the second changed.
func (g *guard) tick() {
	if now := time.Now().Unix(); now != g.second {
		g.second, g.controls, g.pings, g.streams, g.premature = now, 0, 0, 0, 0
	}
}

var errCalm = &connErr{http2.ErrCodeEnhanceYourCalm, "too many control frames or early resets"}

// control counts a control frame; an error ends the connection.
func (g *guard) control() error {
	if g.off {
		return nil
	}
	g.tick()
	g.controls++
	if g.controls > maxControlPerSecond {
		return errCalm
	}
	return nil
}

// sawTraffic notes a HEADERS or DATA frame.
func (g *guard) sawTraffic() { g.traffic = true }

// ping counts a PING that follows no traffic.
func (g *guard) ping() error {
	if g.off {
		return nil
	}
	if g.traffic {
		g.traffic = false
		return nil
	}
	g.tick()
	g.pings++
	if g.pings > maxPingsPerSecond {
		return errCalm
	}
	return nil
}

// opened counts a new stream.
func (g *guard) opened() error {
	g.tick()
	g.streams++
	return nil
}

// reset counts a stream the caller reset; early says before its
// response began.
func (g *guard) reset(early bool) error {
	if !early {
		return nil
	}
	g.tick()
	g.premature++
	if g.premature >= g.rapid && 2*g.premature >= g.streams {
		return errCalm
	}
	return nil
}
