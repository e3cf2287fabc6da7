package resource

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationMarshal(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{24 * time.Hour, `"24h"`},
		{90 * time.Minute, `"1h30m"`},
		{5 * time.Minute, `"5m"`},
		{time.Hour + 30*time.Second, `"1h0m30s"`},
		{1500 * time.Millisecond, `"1.5s"`},
		{0, `"0s"`},
		{-5 * time.Minute, `"-5m"`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(Duration{tt.d})
		if err != nil {
			t.Fatalf("Marshal(%v): %v", tt.d, err)
		}
		if got := string(b); got != tt.want {
			t.Errorf("Marshal(%v): got %s, want %s", tt.d, got, tt.want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back.Duration != tt.d {
			t.Errorf("Unmarshal(%s): got %v, %v, want %v", b, back.Duration, err, tt.d)
		}
	}
}

func TestDurationUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: `"24h"`, want: 24 * time.Hour},
		{in: `"1h30m"`, want: 90 * time.Minute},
		{in: `"300ms"`, want: 300 * time.Millisecond},
		{in: `null`, want: 7}, // unchanged
		{in: `3600`, wantErr: `must be a duration string such as "24h", got number 3600`},
		{in: `true`, wantErr: "got boolean true"},
		{in: `{}`, wantErr: "got a mapping"},
		{in: `"30d"`, wantErr: `invalid duration "30d": write a number and a unit such as "30m" or "24h"`},
		{in: `""`, wantErr: `invalid duration ""`},
		{in: `"soon"`, wantErr: `invalid duration "soon"`},
	}
	for _, tt := range tests {
		d := Duration{7}
		err := json.Unmarshal([]byte(tt.in), &d)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Unmarshal(%s): got %v, want an error containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || d.Duration != tt.want {
			t.Errorf("Unmarshal(%s): got %v, %v, want %v", tt.in, d.Duration, err, tt.want)
		}
	}
}
