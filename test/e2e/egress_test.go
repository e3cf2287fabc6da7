package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/testutil"
)

// egressEvent is the part of a sink line the egress test reads.
type egressEvent struct {
	Kind       string            `json:"kind"`
	SourceID   string            `json:"source_id"`
	Protocol   string            `json:"protocol"`
	Decision   string            `json:"decision"`
	Attributes map[string]string `json:"attributes"`
}

func readEgressEvents(t *testing.T, path string) []egressEvent {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []egressEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev egressEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind == "egress.denied" {
			out = append(out, ev)
		}
	}
	return out
}

// TestTransparentEgress runs egress control on real network namespaces:
// an unmodified app behind `trellis proxy --transparent`, whose workload
// an EgressPolicy selects, calls servers in a pod outside the mesh. TLS
// with the allowed SNI and plain HTTP with an allowed Host pass (the
// external server sees the client's own TLS handshake), every time;
// another SNI, the allowed SNI on another port, and Hosts not listed
// (the wildcard's own domain included) are refused every time, never
// reach the server, and each arrives at the SIEM sink as an
// egress.denied event naming the caller and the host. A workload no
// EgressPolicy selects still passes through (the outbound mode).
func TestTransparentEgress(t *testing.T) {
	needLab(t, "iptables")
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	m := newMeshLab(t, "--audit-sink", "file://"+sink)
	pki := testutil.NewPKI(t, m.dir, testutil.PKIOptions{CAName: "external-ca", ServerName: "api.psp.example",
		ServerDNSNames: []string{"api.psp.example", "evil.example"}})
	if out, err := m.cliIn(`apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {mtls: {mode: STRICT}, authorization: {default: allow}}
---
apiVersion: trellis.dev/v1alpha1
kind: EgressPolicy
metadata: {name: frontend-egress, namespace: shop}
spec:
  selector: {service: frontend}
  hosts: [{name: api.psp.example, ports: [8443]}, {name: "*.s3.example", ports: [8080]}]
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	external := m.addPod("external")
	external.Start(t, []string{"TESTAPP_NAME=external"}, testappBin, "serve", "0.0.0.0:8080")
	external.Start(t, []string{"TESTAPP_NAME=external"}, testappBin, "serve-tls", "0.0.0.0:8443", pki.ServerCert, pki.ServerKey)
	external.Start(t, []string{"TESTAPP_NAME=external"}, testappBin, "serve-tls", "0.0.0.0:9443", pki.ServerCert, pki.ServerKey)
	frontend := m.addMeshPod(t, "frontend", "http", true)
	other := m.addMeshPod(t, "other", "http", true)

	// The policy has reached the proxy once an allowed call passes and a
	// refused one is refused.
	plainURL, tlsURL, wrongPortURL := "http://"+external.IP+":8080/", "https://"+external.IP+":8443/", "https://"+external.IP+":9443/"
	m.eventually(t, "EgressPolicy in force", func() (bool, string) {
		out, err := frontend.Run(testappBin, "load", plainURL, "1", "1", "evil.example")
		return err == nil && strings.Contains(out, "codes=403:1"), out
	})
	const n = 250
	load := func(url, name string, ca bool) string {
		args := []string{"load", url, fmt.Sprint(n), "8", name}
		if ca {
			args = append(args, pki.CAFile)
		}
		out, err := frontend.Run(testappBin, args...)
		if err != nil {
			t.Fatalf("load %s %s: %v\n%s", url, name, err, out)
		}
		return strings.TrimSpace(out)
	}
	for _, tc := range []struct {
		url, name string
		tls       bool
		want      string // prefix of the load summary
	}{
		{tlsURL, "api.psp.example", true, fmt.Sprintf("ok=%d fail=0 codes=200:%d ", n, n)},
		{plainURL, "bucket.s3.example", false, fmt.Sprintf("ok=%d fail=0 codes=200:%d ", n, n)},
		{tlsURL, "evil.example", true, fmt.Sprintf("ok=0 fail=%d codes= err=", n)},
		{wrongPortURL, "api.psp.example", true, fmt.Sprintf("ok=0 fail=%d codes= err=", n)},
		{plainURL, "evil.example", false, fmt.Sprintf("ok=0 fail=%d codes=403:%d ", n, n)},
		{plainURL, "s3.example", false, fmt.Sprintf("ok=0 fail=%d codes=403:%d ", n, n)},
	} {
		got := load(tc.url, tc.name, tc.tls)
		t.Logf("%s as %s: %s", tc.url, tc.name, got)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s as %s: %s, want %s...", tc.url, tc.name, got, tc.want)
		}
	}
	if got := load(tlsURL, "evil.example", true); !strings.Contains(got, "access denied") {
		t.Errorf("refused TLS: %s, want the access_denied alert", got)
	}

	// What reached the external servers: the allowed calls only, with
	// the names the client sent (the proxy replayed its bytes).
	for _, tc := range []struct {
		url  string
		want map[string]int
	}{
		{"http://127.0.0.1:8080/__counts", map[string]int{"http bucket.s3.example 8080": n}},
		{"https://localhost:8443/__counts", map[string]int{"tls api.psp.example 8443": n}},
		{"https://localhost:9443/__counts", map[string]int{}},
	} {
		out, err := external.Run("env", "SSL_CERT_FILE="+pki.CAFile, testappBin, "get", tc.url)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.url, err, out)
		}
		var counts map[string]int
		if err := json.Unmarshal([]byte(out), &counts); err != nil {
			t.Fatalf("%s: %v: %s", tc.url, err, out)
		}
		if fmt.Sprint(counts) != fmt.Sprint(tc.want) {
			t.Errorf("%s: the external server saw %v, want %v", tc.url, counts, tc.want)
		}
	}

	// A workload no EgressPolicy selects: the outbound mode
	// (passthrough) decides, as before.
	if out, err := other.Run(testappBin, "load", plainURL, "20", "4", "evil.example"); err != nil || !strings.HasPrefix(out, "ok=20 fail=0") {
		t.Errorf("other (no EgressPolicy) to evil.example: %v %s", err, out)
	}

	// Every refusal reached the sink as an egress.denied event naming
	// the caller and the host.
	const denied = 4*n + n + 1 // the four refused loads, the second TLS one, the first probe
	caller := "spiffe://trellis.local/ns/shop/sa/frontend"
	var evs []egressEvent
	m.eventually(t, "egress.denied events in the sink", func() (bool, string) {
		evs = readEgressEvents(t, sink)
		return len(evs) >= denied, fmt.Sprintf("%d events", len(evs))
	})
	byHost := map[string]int{}
	for _, e := range evs {
		if e.SourceID != caller || e.Decision != "deny" {
			t.Fatalf("event %+v: want a denial from %s", e, caller)
		}
		byHost[e.Protocol+" "+e.Attributes["host"]+":"+e.Attributes["port"]]++
	}
	wantHosts := map[string]int{
		"tls evil.example:8443":    2 * n,
		"tls api.psp.example:9443": n,
		"http evil.example:8080":   n + 1,
		"http s3.example:8080":     n,
	}
	t.Logf("%d egress.denied events in the sink, by host: %v", len(evs), byHost)
	if fmt.Sprint(byHost) != fmt.Sprint(wantHosts) {
		t.Errorf("events by host: %v, want %v", byHost, wantHosts)
	}

	metrics, err := frontend.Run(testappBin, "get", "http://127.0.0.1:15000/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf(`trellis_outbound_captured_total{result="egress_allowed"} %d`, 2*n),
		fmt.Sprintf(`trellis_outbound_captured_total{result="egress_denied"} %d`, denied),
		`trellis_outbound_captured_total{result="passthrough"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("frontend metrics lack %q", want)
		}
	}
}
