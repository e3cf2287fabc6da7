package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// TestKubectlWalkthrough is docs/kubernetes.md's walkthrough with a real
// kubectl on a real API server, as a user would type it: install, label a
// namespace, run the control plane with the install's own ServiceAccount
// (so its RBAC is what is tested), create a pod and see it injected, start
// its proxy with the pod's projected token and see it join. There is no
// kubelet or kube-proxy: the control plane and the proxy run as local
// processes, and the webhook configurations point at the control plane's
// loopback address instead of its Service. go test -v prints the
// transcript.
func TestKubectlWalkthrough(t *testing.T) {
	skipIfShort(t)
	kubectlBin := kubetest.Kubectl(t)
	c := kubetest.Start(t)
	dir := t.TempDir()
	// kubectl runs kubectl and logs the command and its output; a command
	// that prints a credential (a token) has its output left out of the log.
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		shown := out.String()
		if slices.Contains(args, "token") || strings.Contains(strings.Join(args, " "), "admin\\.token") {
			shown = "(a credential: not logged)\n"
		}
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), shown)
		if err != nil {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}

	// 1. Install.
	manifests := runBinary(t, nil, "", "install", "kubernetes")
	if manifests.code != 0 {
		t.Fatalf("trellis install kubernetes: %v", manifests)
	}
	t.Logf("$ trellis install kubernetes | kubectl apply -f -")
	kubectl(manifests.stdout, "apply", "-f", "-")
	kubectl("", "wait", "--for=condition=Established", "crd/authorizationpolicies.trellis.dev", "crd/meshes.trellis.dev", "--timeout=30s")

	// No kubelet or kube-proxy: the webhooks call the control plane on
	// loopback rather than through its Service.
	hook := freeAddr(t, "127.0.0.1")
	for kind, path := range map[string]string{"validatingwebhookconfiguration/trellis-validate": "/validate", "mutatingwebhookconfiguration/trellis-inject": "/inject"} {
		kubectl("", "patch", kind, "--type=json", "-p", `[{"op":"replace","path":"/webhooks/0/clientConfig","value":{"url":"https://`+hook+path+`"}}]`)
	}

	// 2. The control plane, with the install's ServiceAccount and RBAC.
	saToken := strings.TrimSpace(kubectl("", "-n", "trellis-system", "create", "token", "trellis-control", "--duration=1h"))
	data := filepath.Join(dir, "control")
	grpcAddr, apiAddr := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	cp := runControlProcess(t, data, grpcAddr, "http://"+apiAddr, []string{"control", "--kubernetes",
		"--kubeconfig", c.KubeconfigFor(t, saToken), "--kube-namespace", "trellis-system", "--kube-identity", "trellis-control-0",
		"--data-dir", data, "--grpc-addr", grpcAddr, "--api-addr", apiAddr, "--webhook-addr", hook, "--log-format", "json"})
	cp.AwaitReady(t)
	check := func() map[string]string {
		r := runBinary(t, nil, "", "check", "--kubernetes", "--kubeconfig", c.Kubeconfig, "-o", "json")
		var rep struct {
			Findings []struct{ Level, Check, Subject, Message string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("trellis check --kubernetes -o json: %v (%v)", err, r)
		}
		levels := map[string]string{}
		for _, f := range rep.Findings {
			if levels[f.Check] != "FAIL" {
				levels[f.Check] = f.Level
			}
		}
		return levels
	}
	awaitCond(t, 20*time.Second, "trellis check --kubernetes: webhooks and Lease OK", func() bool {
		l := check()
		return l["webhooks"] == "OK" && l["lease"] == "OK"
	})
	r := runBinary(t, nil, "", "check", "--kubernetes", "--kubeconfig", c.Kubeconfig)
	t.Logf("$ trellis check --kubernetes\n%s", r.stdout)
	levels := check()
	for check, want := range map[string]string{"kubernetes": "OK", "crds": "OK", "webhooks": "OK", "rbac": "OK", "lease": "OK", "replicas": "FAIL"} {
		if got := levels[check]; got != want {
			t.Errorf("check %s: %s, want %s (replicas fail: no kubelet runs the Deployment)", check, got, want)
		}
	}

	// 3. Opt a namespace in; a pod created there is injected.
	kubectl("", "create", "namespace", "shop")
	kubectl("", "label", "namespace", "shop", "trellis.dev/inject=enabled")
	kubectl("", "-n", "shop", "create", "serviceaccount", "catalog")
	inbound := freeAddr(t, "127.0.0.1")
	_, inboundPort, _ := net.SplitHostPort(inbound)
	kubectl(`apiVersion: v1
kind: Pod
metadata:
  name: catalog-1
  namespace: shop
  labels: {app: catalog}
  annotations: {trellis.dev/inbound-port: "`+inboundPort+`"}
spec:
  serviceAccountName: catalog
  containers:
  - name: app
    image: ghcr.io/example/catalog:1
    ports: [{containerPort: 8080}]
`, "apply", "-f", "-")
	inits := kubectl("", "-n", "shop", "get", "pod", "catalog-1", "-o", "jsonpath={range .spec.initContainers[*]}{.name} {.restartPolicy}{\"\\n\"}{end}")
	if !strings.Contains(inits, "trellis-proxy Always") {
		t.Errorf("the pod has no native-sidecar proxy: %q", inits)
	}
	kubectl("", "-n", "shop", "get", "configmap", "trellis-ca-bundle", "-o", "name")

	// A bad policy is refused at kubectl apply time with trellis apply's message.
	bad := exec.Command(kubectlBin, "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
	bad.Stdin = strings.NewReader("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: shop}\nspec: {rules: [{to: [{methods: [GTE]}]}]}\n")
	out, err := bad.CombinedOutput()
	t.Logf("$ kubectl apply -f bad-policy.yaml\n%s", out)
	if err == nil || !strings.Contains(string(out), `spec.rules[0].to[0].methods[0]: "GTE" is not`) {
		t.Errorf("the bad policy was not refused with the validator's message: %v", err)
	}

	// 4. The pod's proxy (the kubelet would start it) joins with the pod's
	// projected token.
	podToken := strings.TrimSpace(kubectl("", "-n", "shop", "create", "token", "catalog", "--audience=trellis", "--bound-object-kind=Pod", "--bound-object-name=catalog-1", "--duration=1h"))
	tokenFile := filepath.Join(dir, "catalog.token")
	if err := os.WriteFile(tokenFile, []byte(podToken), 0o600); err != nil {
		t.Fatal(err)
	}
	startProxyProcess(t, cp, "catalog", tokenFile, "--inbound-addr", inbound, "--http-proxy-addr", "off")
	enc := kubectl("", "-n", "trellis-system", "get", "secret", "trellis-ca", "-o", "jsonpath={.data.admin\\.token}")
	adminToken, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"TRELLIS_API=" + cp.APIURL, "TRELLIS_TOKEN=" + string(adminToken)}
	awaitSynced(t, env, 1)
	st := runBinary(t, env, "", "status")
	t.Logf("$ trellis status\n%s", st.stdout)
	js := runBinary(t, env, "", "status", "-o", "json")
	var list adminapi.ProxyListResponse
	if err := json.Unmarshal([]byte(js.stdout), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("trellis status -o json: %v %v", js, err)
	}
	if got := list.Items[0].SPIFFEID; got != "spiffe://trellis.local/ns/shop/sa/catalog" {
		t.Errorf("the proxy joined as %s, want its ServiceAccount's identity", got)
	}
	// The install's RBAC let the control plane do everything it tried
	// (CA Secret followed, reports written, token records, status).
	awaitCond(t, 10*time.Second, "the proxy's certificate report shared", func() bool {
		out, err := exec.Command(kubectlBin, "--kubeconfig", c.Kubeconfig, "-n", "trellis-system", "get", "configmap", "trellis-proxy-certs-trellis-control-0", "-o", "jsonpath={.data.certs\\.json}").Output()
		return err == nil && strings.Contains(string(out), "spiffe://trellis.local/ns/shop/sa/catalog")
	})
	if strings.Contains(cp.Logs(), "forbidden") {
		t.Errorf("the control plane, on the install's RBAC, was refused something:\n%s", cp.Logs())
	}
}
