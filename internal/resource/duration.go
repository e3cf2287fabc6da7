package resource

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration written in JSON and YAML as a Go duration
// string such as "24h" or "1h30m".
type Duration struct{ time.Duration }

// MarshalJSON writes d as a duration string without trailing zero units:
// "24h" rather than "24h0m0s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(formatDuration(d.Duration))
}

// UnmarshalJSON reads a duration string; null leaves d unchanged.
func (d *Duration) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"24h\", got %s", describeJSON(data))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %s: write a number and a unit such as \"30m\" or \"24h\" (units: ns, us, ms, s, m, h)", quote(s))
	}
	d.Duration = v
	return nil
}

// formatDuration is d.String() without zero minutes and seconds after a
// larger unit, so that it reads as written: "24h", "1h30m", "5m".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
