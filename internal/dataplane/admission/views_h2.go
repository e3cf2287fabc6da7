package admission

import (
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// H2View is a request on the HTTP/2 frame relay (internal/dataplane/h2relay)
// as admission sees it. One can serve every request of a connection.
type H2View struct {
	Req *h2relay.Request
	get func(string) string // v.Get, made once
}

func (v *H2View) Method() string { return v.Req.Method }
func (v *H2View) RawPath() string {
	p, _, _ := strings.Cut(v.Req.Path, "?")
	return p
}
func (v *H2View) RawQuery() string {
	_, q, _ := strings.Cut(v.Req.Path, "?")
	return q
}
func (v *H2View) Proto() string               { return "HTTP/2" }
func (v *H2View) Host() string                { return v.Req.Authority }
func (v *H2View) HTTP11() bool                { return false }
func (v *H2View) Get(name string) string      { return v.Req.Get(name) }
func (v *H2View) Values(name string) []string { return v.Req.Values(name) }

func (v *H2View) Header() (http.Header, func(string) string) {
	if v.get == nil {
		v.get = v.Get
	}
	return nil, v.get
}

// SetPath rewrites :path, keeping the query.
func (v *H2View) SetPath(path string) { v.Req.Path = withQuery(path, v.Req.Path) }

// SetHeader replaces a field's values with one (names in lowercase, as
// HTTP/2 requires).
func (v *H2View) SetHeader(name, value string) {
	v.DelHeader(name)
	v.Req.Fields = append(v.Req.Fields, hpack.HeaderField{Name: strings.ToLower(name), Value: value})
}

// DelHeader removes every value of a field.
func (v *H2View) DelHeader(name string) {
	v.Req.Fields = slices.DeleteFunc(v.Req.Fields, func(f hpack.HeaderField) bool { return strings.EqualFold(f.Name, name) })
}

// Filter needs no Connection pass: HTTP/2 has no Connection field (the
// relay refuses connection-specific fields).
func (v *H2View) Filter(strip *meshconfig.HeaderStrip) *Refusal {
	var rf *Refusal
	v.Req.Fields, rf = screenEach(v.Req.Fields, func(f hpack.HeaderField) string { return f.Name }, strip)
	return rf
}
