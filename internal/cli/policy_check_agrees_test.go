package cli_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/proxy"
	"github.com/trellismesh/trellis/internal/testutil/meshtest"
)

// policy check and the proxy canonicalize paths with one function
// (policy.CanonicalPath): the same tricky paths, sent through real proxies
// and asked of policy check, get the same answer (ALLOW: the app answers
// 200; DENY: 403; refused by the path screen: 400 and a policy check
// error).
func TestPolicyCheckAgreesWithTheProxy(t *testing.T) {
	m := startMesh(t)
	m.mustApply(t, "testdata/policy/check.yaml")
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(l)
	t.Cleanup(func() { app.Close() })
	meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "catalog", AppAddr: l.Addr().String()})
	front := meshtest.StartProxy(t, m.ControlPlane, proxy.Config{Service: "frontend", Upstreams: []proxy.Upstream{{Service: "catalog", Namespace: "shop", Listen: "127.0.0.1:0"}}})
	send := func(path string) int {
		c, err := net.Dial("tcp", front.UpstreamAddr(0))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: catalog.shop\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for send("/items") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("catalog not reachable through frontend within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	paths := []string{
		"/items", "/items/42", "/", "/admin", "/admin/x", "/ADMIN", "/items/../admin", "/items/./42",
		"/items/%2e%2e/admin/x", "/items/%2E%2E/admin", "//admin", "/items//42", "/%69tems/1", "/items/%2541",
		"/items/..%5cadmin", "/items/..%2fadmin", "/items/..;/admin", "/items/..%3B/admin", "/items/%252e%252e/admin",
		"/items/a%00b", "/items;v=1", "/items/x;y",
	}
	classes := map[int]int{}
	for _, p := range paths {
		var want int
		r := m.run(t, "", "policy", "check", "--from", "frontend.shop", "--to", "catalog.shop", "--path", p, "-o", "json")
		switch {
		case r.code == cli.ExitUser && strings.Contains(r.stderr, "the proxy answers 400"):
			want = http.StatusBadRequest
		case r.code != cli.ExitOK:
			t.Fatalf("policy check --path %s: %v", p, r)
		case strings.Contains(r.stdout, `"decision": "ALLOW"`):
			want = http.StatusOK
		default:
			want = http.StatusForbidden
		}
		classes[want]++
		for range 10 {
			if got := send(p); got != want {
				t.Errorf("GET %s: the proxy answers %d, policy check says %d", p, got, want)
				break
			}
		}
	}
	if classes[http.StatusOK] == 0 || classes[http.StatusForbidden] == 0 || classes[http.StatusBadRequest] == 0 {
		t.Errorf("answers by class %v: want allowed, denied and refused paths among the cases", classes)
	}
}
