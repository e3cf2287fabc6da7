package resource

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPortUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    Port
		wantErr string
	}{
		{in: `8080`, want: 8080},
		{in: `"8080"`, want: 8080},
		{in: `1`, want: 1},
		{in: `65535`, want: 65535},
		{in: `null`, want: 7}, // unchanged
		{in: `"http"`, wantErr: `must be a number, got string "http"`},
		{in: `""`, wantErr: `must be a number, got string ""`},
		{in: `" 80"`, wantErr: `must be a number, got string " 80"`},
		{in: `0`, wantErr: "must be a port number from 1 to 65535, got 0"},
		{in: `65536`, wantErr: "got 65536"},
		{in: `"99999999999999999999"`, wantErr: "from 1 to 65535"},
		{in: `-1`, wantErr: "got -1"},
		{in: `80.0`, wantErr: "got 80.0"},
		{in: `1e3`, wantErr: "got 1e3"},
		{in: `true`, wantErr: "must be a number, got boolean true"},
		{in: `[80]`, wantErr: "must be a number, got a list"},
	}
	for _, tt := range tests {
		p := Port(7)
		err := json.Unmarshal([]byte(tt.in), &p)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Unmarshal(%s): got %v, want an error containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p != tt.want {
			t.Errorf("Unmarshal(%s): got %v, %v, want %v", tt.in, p, err, tt.want)
		}
	}
}

func TestPortMarshal(t *testing.T) {
	b, err := json.Marshal(Operation{Ports: []Port{80, 8080}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"ports":[80,8080]}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
