//go:build !trellis_nokube

package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/kube/install"
	"github.com/trellismesh/trellis/internal/testutil"
	"github.com/trellismesh/trellis/internal/testutil/kubetest"
)

// trellis control --kubernetes against a real API server: it keeps the CA
// in a Secret, serves the validating webhook and sets its caBundle, so a
// bad policy applied through the Kubernetes API is refused with trellis
// apply's message; the admin API lists the custom resources and writes
// through to them; without the CRDs it says what to do.
func TestControlKubernetes(t *testing.T) {
	clearEnv(t)
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	core := c.Client.CoreV1()
	for _, ns := range []string{"trellis-system", "shop"} {
		c.Namespace(t, ns, nil)
	}
	dir := filepath.Join(t.TempDir(), "cp")
	args := func(api, hook string) []string {
		return []string{"control", "--kubernetes", "--kubeconfig", c.Kubeconfig, "--kube-namespace", "trellis-system",
			"--data-dir", dir, "--api-addr", api, "--grpc-addr", "127.0.0.1:0", "--webhook-addr", hook, "--log-level", "error"}
	}

	// No CRDs yet.
	if r := run(t, "", args("127.0.0.1:0", "127.0.0.1:0")...); r.code != cli.ExitUser || !strings.Contains(r.stderr, "custom resources are not installed") {
		t.Fatalf("without CRDs: %v", r)
	}

	c.InstallCRDs(t)
	policies := c.Trellis(t, "authorizationpolicies", "shop")
	api, hook := freeAddr(t), freeAddr(t)
	url := "https://" + hook + "/validate"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	if _, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-validate"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "validate.trellis.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules:         []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{"CREATE", "UPDATE"}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"trellis.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{"*"}}}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan int, 1)
	go func() {
		var out strings.Builder
		code := cli.Main(runCtx, args(api, hook), strings.NewReader(""), &out, &out)
		if code != cli.ExitOK {
			t.Logf("trellis control: %s", out.String())
		}
		done <- code
	}()
	testutil.Eventually(t, "trellis control --kubernetes ready", func() bool {
		resp, err := http.Get("http://" + api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The CA is the Secret's; the webhook trusts it.
	s, err := core.Secrets("trellis-system").Get(ctx, "trellis-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the CA Secret: %v", err)
	}
	caCrt, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil || string(s.Data["ca.crt"]) != string(caCrt) {
		t.Errorf("data dir's ca.crt is not the Secret's (%v)", err)
	}
	if tok, err := os.ReadFile(filepath.Join(dir, "admin.token")); err != nil || string(s.Data["admin.token"]) != string(tok) {
		t.Errorf("data dir's admin.token is not the Secret's, so replicas would not share it (%v)", err)
	}
	testutil.Eventually(t, "the only replica holds the Lease", func() bool {
		l, err := c.Client.CoordinationV1().Leases("trellis-system").Get(ctx, "trellis-control", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != ""
	})
	testutil.Eventually(t, "the webhook's caBundle set", func() bool {
		v, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "trellis-validate", metav1.GetOptions{})
		return err == nil && string(v.Webhooks[0].ClientConfig.CABundle) == string(caCrt)
	})

	// A namespace opting into injection gets the CA bundle ConfigMap.
	shop, err := core.Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shop.Labels = map[string]string{"trellis.dev/inject": "enabled"}
	if _, err := core.Namespaces().Update(ctx, shop, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the CA bundle in shop", func() bool {
		cm, err := core.ConfigMaps("shop").Get(ctx, "trellis-ca-bundle", metav1.GetOptions{})
		return err == nil && cm.Data["ca.crt"] == string(caCrt)
	})

	// Through the API server and the served webhook.
	bad := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: shop}\nspec: {rules: [{to: [{methods: [GTE]}]}]}\n")
	testutil.Eventually(t, "the bad policy refused by the webhook", func() bool {
		_, err := policies.Create(ctx, bad, metav1.CreateOptions{})
		return err != nil && strings.Contains(err.Error(), `AuthorizationPolicy shop/bad: spec.rules[0].to[0].methods[0]: "GTE" is not`)
	})
	good := kubetest.Object(t, "apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: reads, namespace: shop}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}\n")
	if _, err := policies.Create(ctx, good, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The admin API shows the custom resources, and its writes go through
	// to them: trellis apply creates and configures a custom resource,
	// seen at once by trellis get; a stale resourceVersion is a conflict;
	// trellis delete deletes it.
	token := filepath.Join(dir, "admin.token")
	cliArgs := func(a ...string) []string {
		return append([]string{"--api", "http://" + api, "--token-file", token}, a...)
	}
	testutil.Eventually(t, "get authz lists the custom resource", func() bool {
		r := run(t, "", cliArgs("get", "authz", "-n", "shop")...)
		return r.code == cli.ExitOK && strings.Contains(r.stdout, "reads")
	})
	// An admin token made in Kubernetes mode is recorded in a Secret in
	// the control plane's namespace (shared by every replica), and works.
	r := run(t, "", cliArgs("admin-token", "create", "--role", "viewer", "--name", "kube-viewer")...)
	if r.code != cli.ExitOK {
		t.Fatalf("admin-token create in Kubernetes mode: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	viewerToken := filepath.Join(t.TempDir(), "viewer.token")
	if err := os.WriteFile(viewerToken, []byte(lines[len(lines)-1]), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := core.Secrets("trellis-system").Get(ctx, "trellis-admin-token-kube-viewer", metav1.GetOptions{}); err != nil || s.Labels["trellis.dev/admin-token"] != "true" {
		t.Errorf("the admin token's record is no Secret: %v", err)
	}
	if r := run(t, "", "--api", "http://"+api, "--token-file", viewerToken, "get", "authz", "-n", "shop"); r.code != cli.ExitOK || !strings.Contains(r.stdout, "reads") {
		t.Errorf("get authz with the new viewer token: %v", r)
	}
	f := filepath.Join(t.TempDir(), "p.yaml")
	write := func(body string) {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: shop, labels: {team: a}}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [GET]}]}]}\n")
	if r := run(t, "", cliArgs("apply", "-f", f)...); r.code != cli.ExitOK || !strings.Contains(r.stdout, "created") {
		t.Fatalf("apply in Kubernetes mode: %v", r)
	}
	u, err := policies.Get(ctx, "x", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the applied policy is no custom resource: %v", err)
	}
	if u.GetLabels()["team"] != "a" {
		t.Errorf("labels %v", u.GetLabels())
	}
	if r := run(t, "", cliArgs("get", "authz", "x", "-n", "shop", "-o", "json")...); r.code != cli.ExitOK || !strings.Contains(r.stdout, u.GetResourceVersion()) {
		t.Errorf("get right after apply: %v, want resourceVersion %s", r, u.GetResourceVersion())
	}
	if r := run(t, "", cliArgs("apply", "-f", f)...); r.code != cli.ExitOK || !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("the same apply again: %v", r)
	}
	write("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: shop, resourceVersion: \"1\"}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [POST]}]}]}\n")
	if r := run(t, "", cliArgs("apply", "-f", f)...); r.code == cli.ExitOK || !strings.Contains(r.stderr, "modified since you read it") {
		t.Errorf("apply with a stale resourceVersion: %v", r)
	}
	write("apiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: shop}\nspec: {selector: {service: catalog}, rules: [{to: [{methods: [POST]}]}]}\n")
	if r := run(t, "", cliArgs("apply", "-f", f)...); r.code != cli.ExitOK || !strings.Contains(r.stdout, "configured") {
		t.Errorf("apply a change: %v", r)
	}
	if u, err := policies.Get(ctx, "x", metav1.GetOptions{}); err != nil || !strings.Contains(fmt.Sprint(u.Object["spec"]), "POST") {
		t.Errorf("the custom resource after the change: %v %v", u, err)
	}
	if r := run(t, "", cliArgs("delete", "authz", "x", "-n", "shop")...); r.code != cli.ExitOK {
		t.Errorf("delete: %v", r)
	}
	if _, err := policies.Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the custom resource after delete: %v", err)
	}
	if r := run(t, "", cliArgs("get", "authz", "-n", "shop")...); strings.Contains(r.stdout, "x ") {
		t.Errorf("get after delete still lists x: %v", r)
	}
	if r := run(t, "", cliArgs("delete", "authz", "x", "-n", "shop")...); r.code == cli.ExitOK || !strings.Contains(r.stderr, "not found") {
		t.Errorf("delete of a missing policy: %v", r)
	}
	// A root rotation is published to the CA Secret (the other replicas
	// follow it: test/e2e TestKubernetesCARotationAcrossReplicas).
	if r := run(t, "", cliArgs("ca", "rotate")...); r.code != cli.ExitOK {
		t.Errorf("ca rotate in Kubernetes mode: %v", r)
	}
	if s, err := core.Secrets("trellis-system").Get(ctx, "trellis-ca", metav1.GetOptions{}); err != nil || strings.Count(string(s.Data["ca.crt"]), "BEGIN CERTIFICATE") != 2 {
		t.Errorf("the CA Secret after the rotation holds %d roots (%v), want 2", strings.Count(string(s.Data["ca.crt"]), "BEGIN CERTIFICATE"), err)
	}

	stop()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("trellis control exited with %d", code)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// trellis uninstall kubernetes talks to the cluster of --kubeconfig: on a
// cluster without Trellis it deletes nothing and says what it keeps; a
// missing kubeconfig is a user error naming the flag.
func TestUninstallKubernetes(t *testing.T) {
	clearEnv(t)
	t.Setenv("KUBECONFIG", "")
	c := kubetest.Start(t)
	r := run(t, "", "uninstall", "kubernetes", "--kubeconfig", c.Kubeconfig)
	if r.code != cli.ExitOK || r.stdout != "" || !strings.Contains(r.stderr, "--purge deletes them") {
		t.Errorf("uninstall on a cluster without Trellis: %v", r)
	}
	if bad := run(t, "", "uninstall", "kubernetes", "--kubeconfig", filepath.Join(t.TempDir(), "none")); bad.code != cli.ExitUser || !strings.Contains(bad.stderr, "--kubeconfig") {
		t.Errorf("missing kubeconfig: %v", bad)
	}
}

// trellis check --kubernetes on a real API server with the install applied
// and no control plane running: the version, the CRDs and the RBAC are OK;
// the webhooks (no caBundle, nobody answering) and the replicas (no kubelet
// runs them) fail, so the exit code is 4. Without the install, the CRDs
// fail too.
func TestCheckKubernetes(t *testing.T) {
	clearEnv(t)
	c := kubetest.Start(t)
	args := []string{"check", "--kubernetes", "--kubeconfig", c.Kubeconfig, "-o", "json"}
	bare := run(t, "", args...)
	if bare.code != cli.ExitCheckFail || !strings.Contains(bare.stdout, `"check": "crds"`) {
		t.Fatalf("without the install: %v", bare)
	}
	if !strings.Contains(bare.stdout, `"level": "FAIL",
      "check": "rbac"`) || !strings.Contains(bare.stdout, "missing: get meshes") {
		t.Errorf("without the install, RBAC should fail naming what is missing:\n%s", bare.stdout)
	}
	objs, err := install.Objects(install.Options{Image: "img", ProxyImage: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, objs)
	var rep struct {
		Worst    string
		Findings []struct{ Level, Check, Subject, Message string }
	}
	testutil.Eventually(t, "the CRDs established", func() bool {
		r := run(t, "", args...)
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			return false
		}
		for _, f := range rep.Findings {
			if f.Check == "crds" && f.Level != "OK" {
				return false
			}
		}
		return r.code == cli.ExitCheckFail
	})
	levels := map[string]string{}
	for _, f := range rep.Findings {
		levels[f.Check+" "+f.Subject] = f.Level
	}
	for key, want := range map[string]string{
		"kubernetes version":                                        "OK",
		"crds authorizationpolicies.trellis.dev":                    "OK",
		"rbac system:serviceaccount:trellis-system:trellis-control": "OK",
		"webhooks trellis-validate":                                 "FAIL",
		"webhooks validate":                                         "FAIL",
		"replicas trellis-system/trellis-control":                   "FAIL",
		"lease trellis-system/trellis-control":                      "FAIL",
	} {
		if levels[key] != want {
			t.Errorf("%s: %q, want %s (findings %+v)", key, levels[key], want, rep.Findings)
		}
	}
	if rep.Worst != "FAIL" {
		t.Errorf("worst %s", rep.Worst)
	}
}

// With a given intermediate (--ca-cert/--ca-key, as from a mounted
// Secret), Kubernetes mode signs with it, sets the webhooks' caBundle to
// its root and keeps only the admin token in the Secret, which two
// replicas share; no CA is made.
func TestControlKubernetesExternalCA(t *testing.T) {
	clearEnv(t)
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Namespace(t, "trellis-system", nil)
	c.InstallCRDs(t)
	certFile, keyFile, root := testutil.UserPKI(t, t.TempDir())
	url := "https://" + freeAddr(t) + "/validate"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	if _, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-validate"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "validate.trellis.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var apis []string
	var dirs []string
	for i := range 2 {
		dir, api := filepath.Join(t.TempDir(), "cp"), freeAddr(t)
		apis, dirs = append(apis, api), append(dirs, dir)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan int, 1)
		go func() {
			var out strings.Builder
			code := cli.Main(runCtx, []string{"control", "--kubernetes", "--kubeconfig", c.Kubeconfig, "--kube-namespace", "trellis-system",
				"--kube-identity", fmt.Sprint("cp-", i), "--data-dir", dir, "--api-addr", api, "--grpc-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0",
				"--ca-cert", certFile, "--ca-key", keyFile, "--log-level", "error"}, strings.NewReader(""), &out, &out)
			if code != cli.ExitOK {
				t.Logf("trellis control: %s", out.String())
			}
			done <- code
		}()
		t.Cleanup(func() { stop(); <-done })
		testutil.Eventually(t, "replica ready", func() bool {
			resp, err := http.Get("http://" + api + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	s, err := c.Client.CoreV1().Secrets("trellis-system").Get(ctx, "trellis-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Data) != 2 || len(s.Data["admin.token"]) == 0 || len(s.Data["ca__token-signing.key"]) == 0 {
		keys := []string{}
		for k := range s.Data {
			keys = append(keys, k)
		}
		t.Errorf("Secret keys %v, want only admin.token and the join tokens' key (the CA is the given one)", keys)
	}
	for _, dir := range dirs {
		if tok, err := os.ReadFile(filepath.Join(dir, "admin.token")); err != nil || string(tok) != string(s.Data["admin.token"]) {
			t.Errorf("%s: admin token is not the Secret's (%v)", dir, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err != nil {
			t.Errorf("%s: no ca.crt: %v", dir, err)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "ca")); len(ents) != 1 || ents[0].Name() != "token-signing.key" {
			t.Errorf("%s: ca/ holds %v; want only the join tokens' key (no CA made beside the given one)", dir, ents)
		}
		key, err := os.ReadFile(filepath.Join(dir, "ca", "token-signing.key"))
		if err != nil || string(key) != string(s.Data["ca__token-signing.key"]) {
			t.Errorf("%s: the join tokens' key is not the Secret's (%v)", dir, err)
		}
	}
	want := string(identity.EncodeCertsPEM(root))
	testutil.Eventually(t, "the webhook's caBundle is the given root", func() bool {
		v, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "trellis-validate", metav1.GetOptions{})
		return err == nil && string(v.Webhooks[0].ClientConfig.CABundle) == want
	})
	for _, api := range apis {
		if r := run(t, "", "--api", "http://"+api, "--token-file", filepath.Join(dirs[0], "admin.token"), "get", "authz", "-A"); r.code != cli.ExitOK {
			t.Errorf("replica %s with the shared admin token: %v", api, r)
		}
	}
}
