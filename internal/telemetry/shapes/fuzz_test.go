package shapes

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// FuzzRecord feeds reports as a hostile proxy could send them (any bytes
// that decode as TrafficStats): the store never panics, stays within its
// bounds, keeps only templates (no raw identifiers), and saves and loads
// what it holds.
func FuzzRecord(f *testing.F) {
	seed, _ := proto.Marshal(report(time.Unix(1_800_000_000, 0), 3, map[string]uint64{"GET /items/{id}": 5, "POST /users/12/cart": 2}))
	f.Add(seed, seed)
	f.Add([]byte{}, seed)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, a, b []byte) {
		s, err := Open(filepath.Join(dir, "shapes.json"), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.path = filepath.Join(t.TempDir(), "shapes.json")
		for i, raw := range [][]byte{a, b, a} {
			var st pb.TrafficStats
			if proto.Unmarshal(raw, &st) != nil {
				continue
			}
			s.Record([]string{"x", "y", "x"}[i], &st)
		}
		for _, e := range s.Edges("") {
			if len(e.Shapes) > MaxShapesPerEdge {
				t.Fatalf("%d shapes on one edge", len(e.Shapes))
			}
			for _, sh := range e.Shapes {
				if !strings.HasPrefix(sh.Template, "/") || len(sh.Method) > 16 {
					t.Fatalf("shape %+v", sh)
				}
			}
		}
		if err := s.Save(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(s.path, nil)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		if len(s2.Edges("")) != len(s.Edges("")) {
			t.Fatalf("reload: %d edges, want %d", len(s2.Edges("")), len(s.Edges("")))
		}
	})
}
