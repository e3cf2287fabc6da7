package admission

import (
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/h1"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// HTTPView is a net/http request (HTTP/1.x or HTTP/2) as admission sees
// it.
type HTTPView struct{ R *http.Request }

func (v HTTPView) Method() string           { return v.R.Method }
func (v HTTPView) RawPath() string          { return RequestPath(v.R) }
func (v HTTPView) RawQuery() string         { return v.R.URL.RawQuery }
func (v HTTPView) Proto() string            { return v.R.Proto }
func (v HTTPView) Host() string             { return v.R.Host }
func (v HTTPView) HTTP11() bool             { return v.R.ProtoMajor == 1 && v.R.ProtoMinor == 1 }
func (v HTTPView) Get(name string) string   { return v.R.Header.Get(name) }
func (v HTTPView) Values(n string) []string { return v.R.Header.Values(n) }

func (v HTTPView) Header() (http.Header, func(string) string) { return v.R.Header, nil }

func (v HTTPView) SetPath(path string) { v.R.URL.Path, v.R.URL.RawPath = path, "" }

func (v HTTPView) SetHeader(name, value string) { v.R.Header.Set(name, value) }
func (v HTTPView) DelHeader(name string)        { v.R.Header.Del(name) }

// Filter also drops Connection tokens naming X-Forwarded-Client-Cert:
// the hop-by-hop pass would otherwise delete the proxy's own header after
// it is set.
func (v HTTPView) Filter(strip *meshconfig.HeaderStrip) *Refusal {
	h := v.R.Header
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

// RequestPath is the path of the request target as received, still
// percent-encoded.
func RequestPath(r *http.Request) string {
	if u := r.RequestURI; u != "" && u[0] == '/' {
		p, _, _ := strings.Cut(u, "?")
		return p
	}
	return r.URL.EscapedPath()
}

// H1View is a request on the HTTP/1.1 fast path as admission sees it. A
// fast path connection holds one, so admission allocates nothing per request.
type H1View struct {
	Req *h1.Head
	get func(string) string // v.forwarded, made once
}

func (v *H1View) Method() string { return v.Req.Method }
func (v *H1View) RawPath() string {
	p, _, _ := strings.Cut(v.Req.Target, "?")
	return p
}
func (v *H1View) RawQuery() string {
	_, q, _ := strings.Cut(v.Req.Target, "?")
	return q
}
func (v *H1View) Proto() string {
	if v.Req.Minor == 1 {
		return "HTTP/1.1"
	}
	return "HTTP/1.0"
}
func (v *H1View) Host() string           { return v.Req.Host }
func (v *H1View) HTTP11() bool           { return v.Req.Minor == 1 }
func (v *H1View) Get(name string) string { return v.Req.Get(name) }

func (v *H1View) Values(name string) []string {
	var out []string
	for i := range v.Req.Fields {
		if f := &v.Req.Fields[i]; strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// Header gives the authorizer the fields that are forwarded: one the
// authenticate step removed (the token) is gone for policies too, as on
// the other paths.
// The method value is made once: made per call, it is an allocation
// per request.
func (v *H1View) Header() (http.Header, func(string) string) {
	if v.get == nil {
		v.get = v.forwarded
	}
	return nil, v.get
}

func (v *H1View) forwarded(name string) string {
	for i := range v.Req.Fields {
		if f := &v.Req.Fields[i]; !f.Drop && strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// SetPath rewrites the target. The fast path takes only canonical paths
// (the inbound hands other forms to net/http), so this does not happen there today.
func (v *H1View) SetPath(path string) { v.Req.Target = withQuery(path, v.Req.Target) }

// SetHeader drops the field's values and appends one.
func (v *H1View) SetHeader(name, value string) {
	v.DelHeader(name)
	v.Req.Fields = append(v.Req.Fields, h1.Field{Name: name, Value: value})
}

// DelHeader drops every value of a field from what is forwarded.
func (v *H1View) DelHeader(name string) {
	for i := range v.Req.Fields {
		if strings.EqualFold(v.Req.Fields[i].Name, name) {
			v.Req.Fields[i].Drop = true
		}
	}
}

// Filter needs no Connection pass: a request whose Connection field
// names fields never takes the fast path.
func (v *H1View) Filter(strip *meshconfig.HeaderStrip) *Refusal {
	var rf *Refusal
	v.Req.Fields, rf = screenEach(v.Req.Fields, func(f h1.Field) string { return f.Name }, strip)
	return rf
}

// screenEach runs screenField over fields in place, keeping those it
// keeps; it stops at the first refusal.
func screenEach[F any](fields []F, name func(F) string, strip *meshconfig.HeaderStrip) ([]F, *Refusal) {
	kept := fields[:0]
	for _, f := range fields {
		keep, rf := screenField(name(f), strip)
		if rf != nil {
			return fields, rf
		}
		if keep {
			kept = append(kept, f)
		}
	}
	return kept, nil
}

// withQuery is path with the query of target, if it has one.
func withQuery(path, target string) string {
	if _, q, ok := strings.Cut(target, "?"); ok {
		return path + "?" + q
	}
	return path
}
