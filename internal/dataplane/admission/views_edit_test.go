package admission

import (
	"net/http"
	"slices"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/h1"
)

// The authenticate step edits requests through the views: every view
// replaces a field's values with one, and removes all of a field's values,
// whatever the case of its name.
func TestViewsEditHeaders(t *testing.T) {
	h1req := &h1.Head{Fields: []h1.Field{{Name: "Authorization", Value: "Bearer t"}, {Name: "X-User-Id", Value: "mallory"}, {Name: "x-user-id", Value: "eve"}, {Name: "Accept", Value: "*/*"}}}
	h2req := &h2relay.Request{Fields: []hpack.HeaderField{{Name: "authorization", Value: "Bearer t"}, {Name: "x-user-id", Value: "mallory"}, {Name: "accept", Value: "*/*"}}}
	hreq := &http.Request{Header: http.Header{"Authorization": {"Bearer t"}, "X-User-Id": {"mallory", "eve"}, "Accept": {"*/*"}}}
	views := map[string]View{"h1": &H1View{Req: h1req}, "h2": &H2View{Req: h2req}, "net/http": HTTPView{R: hreq}}
	for name, v := range views {
		v.DelHeader("authorization")
		v.SetHeader("X-User-Id", "alice")
		if got := v.Values("Authorization"); name != "h1" && len(got) != 0 {
			t.Errorf("%s: Authorization still %v", name, got)
		}
		if got := v.Values("X-User-Id"); name != "h1" && !slices.Equal(got, []string{"alice"}) {
			t.Errorf("%s: X-User-Id %v, want [alice]", name, got)
		}
		if v.Get("Accept") != "*/*" {
			t.Errorf("%s: an unrelated field changed", name)
		}
	}
	// Policies see what is forwarded.
	if _, get := views["h1"].Header(); get("Authorization") != "" || get("X-User-Id") != "alice" {
		t.Errorf("h1 authorizer view: Authorization %q, X-User-Id %q", get("Authorization"), get("X-User-Id"))
	}
	// The fast path forwards the fields not marked Drop.
	var fwd []string
	for _, f := range h1req.Fields {
		if !f.Drop {
			fwd = append(fwd, f.Name+": "+f.Value)
		}
	}
	if !slices.Equal(fwd, []string{"Accept: */*", "X-User-Id: alice"}) {
		t.Errorf("h1 forwards %v", fwd)
	}
}
