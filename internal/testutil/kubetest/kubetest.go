// Package kubetest runs a real Kubernetes API server, with its etcd, as
// local processes on loopback ports for the tests of Kubernetes mode. The
// binaries are built from the Go module proxy and cached outside the
// repository by scripts/k8s-bins.sh (make k8s-bins, which make test runs
// first); without them Start skips the test, or fails it when
// TRELLIS_REQUIRE_ALL is set.
//
// What it is: kube-apiserver (RBAC, static admin token, service-account
// token signing and TokenReview, admission webhooks) and etcd. What it is
// not: there is no kubelet, scheduler, controller manager or container
// runtime, so pods are stored but never run, namespaces get no default
// ServiceAccount and Services get no EndpointSlices: tests create what a
// controller would, and run workloads as local processes.
//
// It must not be imported by non-test code.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/kube/crd"
	"github.com/trellismesh/trellis/internal/testutil"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	memory "k8s.io/client-go/discovery/cached"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Versions of the binaries scripts/k8s-bins.sh builds.
const (
	KubernetesVersion = "1.37.2"
	EtcdVersion       = "3.7.3"
)

// ServiceCIDR is the API server's service range: inside 198.18.0.0/15,
// the range the project's tests may use, never a private one.
const ServiceCIDR = "198.19.0.0/24"

// Issuer is the service-account token issuer the API server signs with.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Audiences the API server accepts for tokens it reviews (TokenReview
// checks the audiences a caller asks for against the token's).
var Audiences = []string{Issuer, "trellis"}

// Cluster is a running API server and its etcd.
type Cluster struct {
	// Config is an admin (system:masters) client config.
	Config *rest.Config
	// Client is a typed client with Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for the admin.
	Kubeconfig string
	// URL is the API server's address, https://127.0.0.1:PORT.
	URL string
	// CAPEM verifies the API server's serving certificate.
	CAPEM []byte

	dir  string
	logs map[string]string // process name -> log file
}

// BinDir is where the binaries are: $TRELLIS_K8S_BIN, or the cache of
// scripts/k8s-bins.sh ($TRELLIS_K8S_CACHE or ~/.cache/trellis/k8s).
func BinDir() (apiserver, etcd string) {
	if d := os.Getenv("TRELLIS_K8S_BIN"); d != "" {
		return filepath.Join(d, "kube-apiserver"), filepath.Join(d, "etcd")
	}
	cache := os.Getenv("TRELLIS_K8S_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "trellis", "k8s")
	}
	return filepath.Join(cache, "v"+KubernetesVersion, "kube-apiserver"),
		filepath.Join(cache, "etcd-v"+EtcdVersion, "etcd")
}

// Require skips the test when the binaries are missing, or fails it when
// TRELLIS_REQUIRE_ALL is set.
func Require(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: -short skips the tests on a real API server")
	}
	apiserver, etcd = BinDir()
	for _, p := range []string{apiserver, etcd} {
		if _, err := os.Stat(p); err != nil {
			msg := "kubetest: " + p + " missing: run make k8s-bins (scripts/k8s-bins.sh builds kube-apiserver and etcd once, about 10 minutes)"
			if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return apiserver, etcd
}

// Start runs etcd and kube-apiserver until the test ends and returns when
// the API server is ready.
func Start(t testing.TB) *Cluster {
	t.Helper()
	apiserverBin, etcdBin := Require(t)
	dir := t.TempDir()
	c := &Cluster{dir: dir, logs: map[string]string{}}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
		}
	})

	etcdURL := c.startEtcd(t, etcdBin)
	pki := newPKI(t, dir)
	token := randomToken(t)
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+",admin,admin-uid,system:masters\n"), 0o600)
	port := testutil.FreePort(t)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + pki.serverCert, "--tls-private-key-file=" + pki.serverKey,
		"--client-ca-file=" + pki.caCert,
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + pki.saPub,
		"--service-account-signing-key-file=" + pki.saKey,
		"--api-audiences=" + strings.Join(Audiences, ","),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
	}
	c.start(t, "kube-apiserver", apiserverBin, args...)

	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	c.CAPEM = pki.caPEM
	c.Config = &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: pki.caPEM},
		QPS:             200,
		Burst:           400,
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	writeFile(t, c.Kubeconfig, kubeconfig(c.URL, pki.caPEM, token), 0o600)
	c.waitReady(t, token, pki.caPEM)
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: client: %v", err)
	}
	c.Client = client
	return c
}

func (c *Cluster) startEtcd(t testing.TB, bin string) string {
	client, peer := testutil.FreePort(t), testutil.FreePort(t)
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	c.start(t, "etcd", bin,
		"--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", "--log-level=warn")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(clientURL + "/health")
		if err == nil {
			ok := resp.StatusCode == http.StatusOK
			resp.Body.Close()
			if ok {
				return clientURL
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: etcd not healthy after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// start runs a process until the test ends (SIGTERM, then SIGKILL after
// 10 s), with its output in a log file shown when the test fails.
func (c *Cluster) start(t testing.TB, name, bin string, args ...string) {
	t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("kubetest: start %s: %v", name, err)
	}
	c.logs[name] = logPath
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		f.Close()
	})
}

func (c *Cluster) waitReady(t testing.TB, token string, caPEM []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err == nil {
			body := new(bytes.Buffer)
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("kubetest: kube-apiserver not ready after 90s: %s", last)
}

func (c *Cluster) dumpLogs(t testing.TB) {
	for name, p := range c.logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 8<<10 {
			b = b[len(b)-8<<10:]
		}
		t.Logf("kubetest: last of %s's log:\n%s", name, b)
	}
}

// Token asks the TokenRequest API for a token of the ServiceAccount
// namespace/sa, with audiences and expiry, bound to a pod when pod is not
// empty, as a kubelet's projected volume gets one.
func (c *Cluster) Token(ctx context.Context, namespace, sa, pod string, expiry time.Duration, audiences ...string) (string, error) {
	return RequestToken(ctx, c.Client, namespace, sa, pod, expiry, audiences...)
}

type pki struct {
	caPEM                         []byte
	caCert, serverCert, serverKey string
	saKey, saPub                  string
}

// newPKI writes a CA, the API server's serving certificate (IP SAN
// 127.0.0.1) and the service-account signing key pair.
func newPKI(t testing.TB, dir string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{
		caPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		caCert:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey:  filepath.Join(dir, "apiserver.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		saPub:      filepath.Join(dir, "sa.pub"),
	}
	writeFile(t, p.caCert, p.caPEM, 0o644)
	writeFile(t, p.serverCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644)
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.serverKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: srvKeyDER}), 0o600)
	writeFile(t, p.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600)
	writeFile(t, p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), 0o644)
	return p
}

func kubeconfig(url string, caPEM []byte, token string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: kubetest\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n", url, b64(caPEM))
	fmt.Fprintf(&b, "users:\n- name: admin\n  user:\n    token: %s\n", token)
	b.WriteString("contexts:\n- name: kubetest\n  context:\n    cluster: kubetest\n    user: admin\ncurrent-context: kubetest\n")
	return []byte(b.String())
}

func randomToken(t testing.TB) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

var errNoToken = errors.New("kubetest: TokenRequest returned no token")

// Namespace creates a namespace with labels.
func (c *Cluster) Namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: namespace %s: %v", name, err)
	}
}

// Dynamic is a dynamic client with the admin config.
func (c *Cluster) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return dyn
}

// InstallCRDs creates Trellis's CRDs (internal/kube/crd) and returns once
// the API server serves them.
func (c *Cluster) InstallCRDs(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	ext, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	crds, err := crd.All()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	for _, d := range crds {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatalf("kubetest: create CRD %s: %v", d.Name, err)
		}
	}
	dyn := c.Dynamic(t)
	deadline := time.Now().Add(30 * time.Second)
	for _, d := range crds {
		r := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: d.Spec.Names.Plural})
		for {
			if _, err := r.List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("kubetest: CRD %s not served after 30s: %v", d.Name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Trellis is the dynamic client of a Trellis resource (its plural) in
// namespace ns ("" for cluster-scoped ones).
func (c *Cluster) Trellis(t testing.TB, plural, ns string) dynamic.ResourceInterface {
	t.Helper()
	r := c.Dynamic(t).Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: plural})
	if ns == "" {
		return r
	}
	return r.Namespace(ns)
}

// Object decodes one YAML document into an unstructured object.
func Object(t testing.TB, doc string) *unstructured.Unstructured {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return &unstructured.Unstructured{Object: m}
}

// Mapper maps kinds to the API server's resources (discovery).
func (c *Cluster) Mapper(t testing.TB) meta.RESTMapper {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
}

// Apply creates objs as kubectl apply would the first time, with strict
// field validation, and returns the kinds it made.
func (c *Cluster) Apply(t testing.TB, objs []runtime.Object) map[string]bool {
	t.Helper()
	ctx := context.Background()
	dyn, mapper := c.Dynamic(t), c.Mapper(t)
	kinds := map[string]bool{}
	for _, o := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("kubetest: %s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if ns := u.GetNamespace(); ns != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		if _, err := ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Errorf("kubetest: create %s %s: %v", gvk.Kind, u.GetName(), err)
		}
		kinds[gvk.Kind] = true
	}
	return kinds
}
