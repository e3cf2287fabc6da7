package dataplane_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// The inbound admission chain (internal/dataplane/admission) runs for every inbound
// request whatever carries it. These cases run as one table over the
// three ways into the server proxy:
//
//   - fast path: the client proxy's upstream listener, a canonical path:
//     HTTP/1.1 over mTLS, the inbound fast path;
//   - net/http HTTP/1.1: the same listener, a path with a "/./" segment,
//     which the inbound fast path leaves to net/http (the outbound
//     forwards it as is);
//   - net/http HTTP/2: the client proxy's HTTP proxy port, forwarded over
//     HTTP/2.

// admissionVia sends one request the given way and returns the response
// and its body.
type admissionVia struct {
	name string
	send func(t *testing.T, m *mesh, method, path string, fields []string) (*http.Response, string)
}

var admissionVias = []admissionVia{
	{"fast path", func(t *testing.T, m *mesh, method, path string, fields []string) (*http.Response, string) {
		return rawRequest(t, m.upstreamAddr, method+" "+path+" HTTP/1.1", fields)
	}},
	{"net/http HTTP/1.1", func(t *testing.T, m *mesh, method, path string, fields []string) (*http.Response, string) {
		return rawRequest(t, m.upstreamAddr, method+" /."+path+" HTTP/1.1", fields)
	}},
	{"net/http HTTP/2", func(t *testing.T, m *mesh, method, path string, fields []string) (*http.Response, string) {
		return rawRequest(t, m.proxyAddr, method+" http://catalog.shop"+path+" HTTP/1.1", fields)
	}},
}

func rawRequest(t *testing.T, addr, line string, fields []string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := line + "\r\nHost: catalog.shop\r\nConnection: close\r\n"
	for _, f := range fields {
		req += f + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestAdmissionOverEveryPath(t *testing.T) {
	app := &screenApp{}
	m := newMesh(t, meshOptions{app: app, authorizer: &pathAuthorizer{}})
	runAdmissionCases(t, m, app, admissionVias)
}

// TestAdmissionOverTheHTTP2Relay runs the same cases over the HTTP/2
// relay: an h2c caller of the client proxy's upstream listener, relayed
// over mTLS h2 to the server proxy of an HTTP/2 app.
func TestAdmissionOverTheHTTP2Relay(t *testing.T) {
	app := &screenApp{}
	m := newMesh(t, meshOptions{app: app, appH2C: true, protocol: meshconfig.ProtocolHTTP2, authorizer: &pathAuthorizer{}})
	runAdmissionCases(t, m, app, []admissionVia{{"HTTP/2 relay", h2Request}})
}

func runAdmissionCases(t *testing.T, m *mesh, app *screenApp, vias []admissionVia) {
	wantXFCC := `["By=spiffe://trellis.test/ns/shop/sa/catalog;URI=spiffe://trellis.test/ns/shop/sa/frontend"]`
	for _, tc := range []struct {
		name         string
		method, path string
		fields       []string
		code         int
		body         string // a substring of the answer's body
		deniedBy     string
		// appXFCC is what the app must see of X-Forwarded-Client-Cert
		// when the request reaches it ("" means it must not reach it).
		appXFCC string
	}{
		{name: "plain", method: "GET", path: "/items", code: 200, appXFCC: wantXFCC},
		{name: "forged XFCC", method: "GET", path: "/items", fields: []string{"X-Forwarded-Client-Cert: By=x;URI=spiffe://trellis.test/ns/shop/sa/admin"}, code: 200, appXFCC: wantXFCC},
		{name: "forged xfcc, lower case", method: "GET", path: "/items", fields: []string{"x-forwarded-client-cert: forged"}, code: 200, appXFCC: wantXFCC},
		{name: "forged XFCC, underscores", method: "GET", path: "/items", fields: []string{"X_Forwarded_Client_Cert: forged", "x_FORWARDED_client_CERT: forged"}, code: 200, appXFCC: wantXFCC},
		{name: "forged XFCC twice", method: "GET", path: "/items", fields: []string{"X-Forwarded-Client-Cert: a", "X-Forwarded-Client-Cert: b"}, code: 200, appXFCC: wantXFCC},
		{name: "denied", method: "GET", path: "/admin", code: 403, body: "RBAC: access denied", deniedBy: "shop/no-admin"},
		{name: "denied POST", method: "POST", path: "/deny", fields: []string{"Content-Length: 0"}, code: 403, body: "RBAC: access denied", deniedBy: "shop/no-admin"},
		{name: "dot segments to a denied path", method: "GET", path: "/items/../admin", code: 403, deniedBy: "shop/no-admin"},
		{name: "encoded dot segments", method: "GET", path: "/items/%2e%2e/admin/x", code: 403, deniedBy: "shop/no-admin"},
		{name: "doubled slash", method: "GET", path: "//admin", code: 403, deniedBy: "shop/no-admin"},
		{name: "backslash", method: "GET", path: "/items/..%5cadmin", code: 400, body: "backslash"},
		{name: "method case", method: "get", path: "/items", code: 400, body: "case-sensitive"},
		{name: "framing look-alike", method: "GET", path: "/items", fields: []string{"Transfer_Encoding: chunked"}, code: 400, body: "framing"},
		{name: "strip list", method: "GET", path: "/items", fields: []string{"X-Spiffe-Id: spiffe://trellis.test/ns/shop/sa/admin"}, code: 200, appXFCC: wantXFCC},
	} {
		for _, via := range vias {
			for range 10 {
				resp, body := via.send(t, m, tc.method, tc.path, tc.fields)
				if resp.StatusCode != tc.code || !strings.Contains(body, tc.body) || resp.Header.Get("X-Trellis-Denied-By") != tc.deniedBy {
					t.Fatalf("%s via %s: %d %q denied-by %q, want %d %q denied-by %q",
						tc.name, via.name, resp.StatusCode, body, resp.Header.Get("X-Trellis-Denied-By"), tc.code, tc.body, tc.deniedBy)
				}
			}
			seen := app.take()
			if tc.appXFCC == "" {
				if len(seen) > 0 {
					t.Errorf("%s via %s reached the app:\n%s", tc.name, via.name, seen[0])
				}
				continue
			}
			if len(seen) != 10 {
				t.Fatalf("%s via %s: app saw %d requests, want 10", tc.name, via.name, len(seen))
			}
			for _, s := range seen {
				var xfcc []string
				for _, line := range strings.Split(s, "\n") {
					name, value, _ := strings.Cut(line, ": ")
					if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "X-Forwarded-Client-Cert") {
						xfcc = append(xfcc, value)
					}
					if strings.EqualFold(name, "X-Spiffe-Id") {
						t.Errorf("%s via %s: the app saw a caller's X-Spiffe-Id", tc.name, via.name)
					}
				}
				if got := `["` + strings.Join(xfcc, `","`) + `"]`; got != tc.appXFCC {
					t.Errorf("%s via %s: app saw X-Forwarded-Client-Cert %s, want %s", tc.name, via.name, got, tc.appXFCC)
					break
				}
			}
		}
	}
}

// h2Request sends one request as an h2c caller with prior knowledge,
// field names lowercased as HTTP/2 wants them, and reads the answer.
func h2Request(t *testing.T, m *mesh, method, path string, fields []string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", m.upstreamAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: path}, {Name: ":authority", Value: "catalog.shop"}}, h2Fields(fields)...) {
		_ = enc.WriteField(f)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	resp := &http.Response{Header: http.Header{}}
	var body bytes.Buffer
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s %s over h2: %v", method, path, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if s := f.PseudoValue("status"); s != "" {
				resp.StatusCode, _ = strconv.Atoi(s)
			}
			for _, hf := range f.RegularFields() {
				resp.Header.Add(hf.Name, hf.Value)
			}
			if f.StreamEnded() {
				return resp, body.String()
			}
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			body.Write(f.Data())
			if f.StreamEnded() {
				return resp, body.String()
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("%s %s over h2: stream reset %v", method, path, f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("%s %s over h2: GOAWAY %v", method, path, f.ErrCode)
		}
	}
}

// h2Fields turns "Name: value" lines into HTTP/2 fields.
func h2Fields(lines []string) []hpack.HeaderField {
	var out []hpack.HeaderField
	for _, l := range lines {
		name, value, _ := strings.Cut(l, ": ")
		out = append(out, hpack.HeaderField{Name: strings.ToLower(name), Value: value})
	}
	return out
}
