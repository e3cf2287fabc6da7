package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// TestStatusShowsRestored: a workload restored after a control plane
// restart is listed in the table with its own state, and the detail view
// says it awaits its proxy's reconnect (trellis check warns, not fails:
// meshhealth's TestRestoredIsAWarning).
func TestStatusShowsRestored(t *testing.T) {
	since := time.Now().Add(-4 * time.Second)
	p := adminapi.ProxyInfo{Instance: "a1b2", Service: "catalog", Namespace: "shop", AdvertiseAddr: "10.0.0.1:15006",
		State: adminapi.ProxyRestored, Since: &since, DisconnectedAt: &since}
	var out, errOut bytes.Buffer
	if err := printProxyList(&out, &errOut, []adminapi.ProxyInfo{p}, "table", ""); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "RESTORED for 4s") || errOut.Len() != 0 {
		t.Errorf("table:\n%s%s\nwant one row with RESTORED for 4s", out.String(), errOut.String())
	}
	out.Reset()
	if err := printProxyStatus(&out, adminapi.ProxyStatus{ProxyInfo: p, Note: "no snapshot has been sent to this proxy by this control plane"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Connected:      no, awaiting reconnect (restored ") {
		t.Errorf("detail:\n%s\nwant the Connected row to say it awaits its proxy's reconnect", out.String())
	}
}
