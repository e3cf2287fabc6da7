package resource

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Port is a TCP port, 1 to 65535. It reads from a JSON or YAML number or a
// numeric string ("8080") and writes as a number.
type Port uint16

// UnmarshalJSON reads a port number; null leaves p unchanged.
func (p *Port) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var text string
	switch {
	case len(data) > 0 && data[0] == '"':
		if err := json.Unmarshal(data, &text); err != nil {
			return fmt.Errorf("must be a number, got %s", describeJSON(data))
		}
		if !isDigits(text) {
			return fmt.Errorf("must be a number, got string %s", quote(text))
		}
	case len(data) > 0 && (data[0] == '-' || data[0] >= '0' && data[0] <= '9'):
		text = string(data)
	default:
		return fmt.Errorf("must be a number, got %s", describeJSON(data))
	}
	n, err := strconv.ParseUint(text, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("must be a port number from 1 to 65535, got %s", truncate(text))
	}
	*p = Port(n)
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
