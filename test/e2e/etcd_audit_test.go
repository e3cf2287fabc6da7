package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// sinkNames reads the file sink and returns how many resource.applied
// events name each policy.
func sinkNames(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		var ev struct {
			Kind       string            `json:"kind"`
			Attributes map[string]string `json:"attributes"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Kind == "resource.applied" {
			out[ev.Attributes["name"]]++
		}
	}
	return out
}

// TestEtcdAuditOutbox: two replicas on etcd with a standalone collector.
// The collector is down while replica A applies 60 policies, so none of
// A's events can have been acknowledged; A is then killed -9 and never
// comes back. Every one of the 60 events reaches the collector's sink
// once it is back, forwarded from etcd by B, which takes the singletons'
// election over from A. The singletons run on one replica at a time.
func TestEtcdAuditOutbox(t *testing.T) {
	skipIfShort(t)
	c := etcdtest.Start(t, 3)
	dir := t.TempDir()
	kek := writeKEK(t, dir)
	colGRPC, colAPI := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	replica := func(name string) *controlProcess {
		p := startControl(t, filepath.Join(dir, name), "", "--store", "etcd://"+strings.Join(c.Endpoints(), ","), "--ca-kek-file", kek,
			"--replica-id", name, "--etcd-ca-file", c.CAFile, "--etcd-cert-file", c.CertFile, "--etcd-key-file", c.KeyFile,
			"--collector-addr", colGRPC)
		p.AwaitReady(t)
		return p
	}
	a := replica("cp-a")
	awaitCond(t, 15*time.Second, "cp-a leads the singletons", func() bool { return scrapeControl(t, a, "trellis_control_leader") == 1 })
	b := replica("cp-b")
	time.Sleep(time.Second)
	if got := scrapeControl(t, b, "trellis_control_leader"); got != 0 {
		t.Fatalf("cp-b leads too (trellis_control_leader %v): two leaders", got)
	}

	tok := mustRun(t, runBinary, a.env(), "", "token", "create", "--service", "collector", "--namespace", "trellis-system")
	tokFile := filepath.Join(dir, "collector.token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	sinkPath := filepath.Join(dir, "audit.jsonl")
	colArgs := []string{"--control", b.GRPCAddr, "--ca-file", b.caFile(), "--token-file", tokFile, "--audit-sink", "file://" + sinkPath}
	colDir := filepath.Join(dir, "collector")
	col := startCollector(t, colDir, colGRPC, colAPI, colArgs...)
	if err := col.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-col.exited

	const n = 60
	for i := range n {
		doc := fmt.Sprintf("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: outbox-%02d, namespace: shop}\n"+
			"spec: {selector: {service: catalog}, action: DENY, rules: [{to: [{paths: [/p%d]}]}]}\n", i, i)
		if r := runBinary(t, a.env(), doc, "apply", "-f", "-"); r.code != 0 {
			t.Fatalf("apply %d through cp-a: %v", i, r)
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	killed := time.Now()
	awaitCond(t, 30*time.Second, "cp-b takes the singletons over", func() bool { return scrapeControl(t, b, "trellis_control_leader") == 1 })
	t.Logf("cp-b leads %.1fs after cp-a was killed", time.Since(killed).Seconds())

	startCollector(t, colDir, colGRPC, colAPI, colArgs...)
	var got map[string]int
	awaitCond(t, 30*time.Second, "every event of the killed replica in the sink", func() bool {
		got = sinkNames(t, sinkPath)
		for i := range n {
			if got[fmt.Sprintf("outbox-%02d", i)] == 0 {
				return false
			}
		}
		return true
	})
	dups := 0
	for _, k := range got {
		dups += k - 1
	}
	t.Logf("%d events of cp-a delivered after its kill -9 (%d delivered twice)", len(got), dups)
}

// scrapeControl reads one unlabelled metric from p's /metrics (-1 when it
// cannot).
func scrapeControl(t *testing.T, p *controlProcess, name string) float64 {
	t.Helper()
	resp, err := http.Get(p.APIURL + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
