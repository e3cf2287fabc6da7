package dataplane_test

import (
	"bytes"
	"crypto/tls"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// h2spec (github.com/summerwind/h2spec, built by scripts/k8s-bins.sh)
// runs its 145 HTTP/2 conformance cases against both listeners of the
// relay: the client proxy's h2c upstream listener, and the server proxy's
// mTLS inbound, reached through a pipe that adds the client certificate
// h2spec cannot present. Every request crosses both proxies to an h2c app.

const h2specVersion = "2.2.1"

// h2specExpected are the cases that fail by design, and why.
var h2specExpected = map[string]string{
	// The upstream listener serves HTTP/1.1 and h2c on one port: a bad
	// preface is an HTTP/1.1 request to it and gets an HTTP/1.1 answer
	// (the fast path's 400), not a silent close.
	"outbound http2/3.5/2": "the upstream listener also speaks HTTP/1.1",
}

// h2specPath is $TRELLIS_H2SPEC or the cache of scripts/k8s-bins.sh.
func h2specPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short skips h2spec")
	}
	p := os.Getenv("TRELLIS_H2SPEC")
	if p == "" {
		cache := os.Getenv("TRELLIS_K8S_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "trellis", "k8s")
		}
		p = filepath.Join(cache, "h2spec-v"+h2specVersion, "h2spec")
	}
	if _, err := os.Stat(p); err != nil {
		msg := p + " missing: run make k8s-bins (scripts/k8s-bins.sh builds h2spec v" + h2specVersion + " once)"
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func TestH2Spec(t *testing.T) {
	bin := h2specPath(t)
	m := newMesh(t, meshOptions{protocol: meshconfig.ProtocolHTTP2, appH2C: true, app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "h2spec through two proxies\n")
	})})
	targets := map[string]string{
		"outbound": m.upstreamAddr,
		"inbound":  certPipe(t, m.inboundAddr, m.pki.cert(frontendID)),
	}
	for side, addr := range targets {
		t.Run(side, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(addr)
			report := filepath.Join(t.TempDir(), "h2spec.xml")
			out, err := exec.Command(bin, "-h", host, "-p", port, "-o", "3", "-j", report).CombinedOutput()
			cases, perr := readJUnit(report)
			if perr != nil {
				t.Fatalf("h2spec report: %v (h2spec %v)\n%s", perr, err, out)
			}
			if len(cases) < 140 {
				t.Fatalf("h2spec ran %d cases, want 145:\n%s", len(cases), out)
			}
			failed := 0
			seen := map[string]bool{}
			for _, c := range cases {
				key := side + " " + c.ID
				seen[key] = true
				why, expected := h2specExpected[key]
				switch {
				case c.failed() && !expected:
					failed++
					t.Errorf("%s %s: %s", key, c.Name, c.failure())
				case !c.failed() && expected:
					t.Errorf("%s %s passes now: drop it from h2specExpected (%s)", key, c.Name, why)
				}
			}
			for key := range h2specExpected {
				if strings.HasPrefix(key, side+" ") && !seen[key] {
					t.Errorf("h2specExpected names %q, which h2spec did not run", key)
				}
			}
			t.Logf("%s: %d cases, %d unexpected failures", side, len(cases), failed)
		})
	}
}

// certPipe listens on loopback and pipes each connection to the inbound
// over mTLS with cert (ALPN h2).
func certPipe(t *testing.T, inbound string, cert *tls.Certificate) string {
	l := listen(t)
	conf := &tls.Config{Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := tls.Dial("tcp", inbound, conf)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); _ = up.CloseWrite(); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); _ = c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

type junitCase struct {
	// ID is "<package>/<n>", as h2spec numbers its cases ("http2/3.5/2").
	ID      string `xml:"-"`
	Package string `xml:"package,attr"`
	Name    string `xml:"classname,attr"`
	Failure *struct {
		Text string `xml:",chardata"`
	} `xml:"failure"`
	Error *struct {
		Text string `xml:",chardata"`
	} `xml:"error"`
}

func (c junitCase) failed() bool { return c.Failure != nil || c.Error != nil }

func (c junitCase) failure() string {
	if c.Failure != nil {
		return strings.TrimSpace(c.Failure.Text)
	}
	if c.Error != nil {
		return strings.TrimSpace(c.Error.Text)
	}
	return ""
}

func readJUnit(path string) ([]junitCase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Failure texts quote frames byte for byte (a PING's opaque data has
	// NULs), which XML does not allow.
	b = bytes.ReplaceAll(b, []byte{0}, []byte{' '})
	var doc struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	var out []junitCase
	for _, s := range doc.Suites {
		for i, c := range s.Cases {
			c.ID = c.Package + "/" + strconv.Itoa(i+1)
			out = append(out, c)
		}
	}
	return out, nil
}
