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
	// A connection whose callers reset at least half of its streams
	// before their response began, after resetMinStreams streams, is a
	// rapid-reset attack (CVE-2023-44487), as Envoy counts it.
	resetMinStreams = 100
)

// guard counts one connection's cheap frames and early resets (reader
// goroutine only).
type guard struct {
	second    int64
	controls  int
	streams   int
	premature int
}

var errCalm = &connErr{http2.ErrCodeEnhanceYourCalm, "too many control frames or early resets"}

// control counts a control frame; an error ends the connection.
func (g *guard) control() error {
	now := time.Now().Unix()
	if now != g.second {
		g.second, g.controls = now, 0
	}
	g.controls++
	if g.controls > maxControlPerSecond {
		return errCalm
	}
	return nil
}

// opened counts a new stream.
func (g *guard) opened() error {
	g.streams++
	return nil
}

// reset counts a stream the caller reset; early says before its
// response began.
func (g *guard) reset(early bool) error {
	if !early {
		return nil
	}
	g.premature++
	if g.streams >= resetMinStreams && 2*g.premature >= g.streams {
		return errCalm
	}
	return nil
}
