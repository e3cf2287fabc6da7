package adminview

import (
	"strconv"
	"time"
)

// ShortID abbreviates a hex digest or key ID for people, as git does: its
// first 12 characters.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// age is the AGE column: how long before now t was, in one unit.
func age(t *time.Time, now time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	return shortDuration(now.Sub(*t))
}

// shortDuration renders d in one unit, rounded down; a negative d (a
// server clock ahead of ours) is 0s.
func shortDuration(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
