package adminview

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// TestProxiesShowRestored: a workload restored after a control plane
// restart is listed in the table with its own state, and the detail view
// says it awaits its proxy's reconnect (trellis check warns, not fails:
// meshhealth's TestRestoredIsAWarning).
func TestProxiesShowRestored(t *testing.T) {
	now := time.Now()
	since := now.Add(-4 * time.Second)
	p := adminapi.ProxyInfo{Instance: "a1b2", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006",
		State: adminapi.ProxyRestored, Since: &since, DisconnectedAt: &since}
	var out bytes.Buffer
	if err := WriteProxies(&out, []adminapi.ProxyInfo{p}, now); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "RESTORED for 4s") {
		t.Errorf("table:\n%s\nwant one row with RESTORED for 4s", out.String())
	}
	out.Reset()
	if err := WriteProxy(&out, adminapi.ProxyStatus{ProxyInfo: p, Note: "no snapshot has been sent to this proxy by this control plane"}, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Connected:      no, awaiting reconnect (restored ") {
		t.Errorf("detail:\n%s\nwant the Connected row to say it awaits its proxy's reconnect", out.String())
	}
}
