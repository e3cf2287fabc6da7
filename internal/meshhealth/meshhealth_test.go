package meshhealth

import (
	"context"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
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
		want Level
	}{
		{0, OK},
		{365*24*time.Hour - 21*24*time.Hour, Warn},
		{365*24*time.Hour - 3*24*time.Hour, Fail},
	} {
		rep, err := Run(context.Background(), c, c.BaseURL, time.Now().Add(tc.at))
		if err != nil {
			t.Fatal(err)
		}
		var got Level
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

// A workload restored after a control plane restart is a WARN, not a FAIL:
// its proxy is expected to reconnect.
func TestRestoredIsAWarning(t *testing.T) {
	since := time.Now().Add(-4 * time.Second)
	p := adminapi.ProxyInfo{Instance: "a1b2", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006",
		State: adminapi.ProxyRestored, Since: &since, DisconnectedAt: &since}
	var levels []Level
	checkProxies([]adminapi.ProxyInfo{p}, time.Now(), func(level Level, check, subject, format string, args ...any) {
		if subject != "" {
			levels = append(levels, level)
		}
	})
	if len(levels) != 1 || levels[0] != Warn {
		t.Errorf("check levels %v, want one %s", levels, Warn)
	}
}
