package cli

import (
	"context"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// The CA thresholds: the intermediate lives a year, so a year later
// minus a few days is a FAIL, minus three weeks a WARN, and now OK.
func TestCheckCAExpiry(t *testing.T) {
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	c := cp.Client(t)
	for _, tc := range []struct {
		at   time.Duration
		want string
	}{
		{0, levelOK},
		{365*24*time.Hour - 21*24*time.Hour, levelWarn},
		{365*24*time.Hour - 3*24*time.Hour, levelFail},
	} {
		rep, err := runChecks(context.Background(), c, time.Now().Add(tc.at))
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, f := range rep.Findings {
			if f.Check == "ca" && len(f.Subject) > 12 && f.Subject[:12] == "intermediate" {
				got = f.Level
			}
		}
		if got != tc.want {
			t.Errorf("intermediate %s from now: %s, want %s (%+v)", tc.at, got, tc.want, rep.Findings)
		}
	}
}
