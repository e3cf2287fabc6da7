package dataplane

import (
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// httpView is a net/http request (HTTP/1.x or HTTP/2) as admission sees
// it.
type httpView struct{ r *http.Request }

func (v httpView) Method() string           { return v.r.Method }
func (v httpView) RawPath() string          { return requestPath(v.r) }
func (v httpView) Host() string             { return v.r.Host }
func (v httpView) HTTP11() bool             { return v.r.ProtoMajor == 1 && v.r.ProtoMinor == 1 }
func (v httpView) Get(name string) string   { return v.r.Header.Get(name) }
func (v httpView) Values(n string) []string { return v.r.Header.Values(n) }

func (v httpView) header() (http.Header, func(string) string) { return v.r.Header, nil }

func (v httpView) SetPath(path string) { v.r.URL.Path, v.r.URL.RawPath = path, "" }

// Filter also drops Connection tokens naming X-Forwarded-Client-Cert:
// the hop-by-hop pass would otherwise delete the proxy's own header after
// it is set.
func (v httpView) Filter(strip *meshconfig.HeaderStrip) *refusal {
	h := v.r.Header
	for k := range h {
		keep, rf := screenField(k, strip)
		if rf != nil {
			return rf
		}
		if !keep {
			delete(h, k)
		}
	}
	removeXFCCTokens(h)
	return nil
}

// requestPath is the path of the request target as received, still
// percent-encoded.
func requestPath(r *http.Request) string {
	if u := r.RequestURI; u != "" && u[0] == '/' {
		p, _, _ := strings.Cut(u, "?")
		return p
	}
	return r.URL.EscapedPath()
}

// h1View is a request on the HTTP/1.1 fast path as admission sees it. A
// fastConn holds one, so admission allocates nothing per request.
type h1View struct{ req *h1.Head }

func (v *h1View) Method() string { return v.req.Method }
func (v *h1View) RawPath() string {
	p, _, _ := strings.Cut(v.req.Target, "?")
	return p
}
func (v *h1View) Host() string           { return v.req.Host }
func (v *h1View) HTTP11() bool           { return v.req.Minor == 1 }
func (v *h1View) Get(name string) string { return v.req.Get(name) }

func (v *h1View) Values(name string) []string {
	var out []string
	for i := range v.req.Fields {
		if f := &v.req.Fields[i]; strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

func (v *h1View) header() (http.Header, func(string) string) { return nil, v.req.Get }

// SetPath rewrites the target. The fast path takes only canonical paths
// (Inbound.fastAccepts), so this does not happen there today.
func (v *h1View) SetPath(path string) {
	_, q, ok := strings.Cut(v.req.Target, "?")
	if ok {
		path += "?" + q
	}
	v.req.Target = path
}

// Filter needs no Connection pass: a request whose Connection field
// names fields never takes the fast path.
func (v *h1View) Filter(strip *meshconfig.HeaderStrip) *refusal {
	kept := v.req.Fields[:0]
	for _, f := range v.req.Fields {
		keep, rf := screenField(f.Name, strip)
		if rf != nil {
			return rf
		}
		if keep {
			kept = append(kept, f)
		}
	}
	v.req.Fields = kept
	return nil
}
