package adminview

import (
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

func TestAge(t *testing.T) {
	now := time.Now()
	ago := func(d time.Duration) *time.Time { tm := now.Add(-d); return &tm }
	for _, tc := range []struct {
		t    *time.Time
		want string
	}{
		{nil, "<unknown>"},
		{ago(30 * time.Second), "30s"},
		{ago(90 * time.Minute), "90m"},
		{ago(30 * time.Hour), "30h"},
		{ago(72 * time.Hour), "3d"},
		{ago(-time.Hour), "0s"}, // the server's clock is ahead
	} {
		if got := age(tc.t, now); got != tc.want {
			t.Errorf("age(%v): got %s, want %s", tc.t, got, tc.want)
		}
	}
}

func TestSelectorString(t *testing.T) {
	for _, tc := range []struct {
		sel  resource.Selector
		want string
	}{
		{resource.Selector{}, "<namespace>"},
		{resource.Selector{Service: "cart"}, "service=cart"},
		{resource.Selector{Service: "cart", MatchLabels: map[string]string{"z": "1", "a": "2", "m": "3", "b": "4"}}, "service=cart,a=2,b=4,m=3,z=1"},
	} {
		// Map order varies between runs of the loop, not only between runs
		// of the test.
		for range 20 {
			if got := selectorString(tc.sel); got != tc.want {
				t.Fatalf("selectorString(%+v): got %s, want %s", tc.sel, got, tc.want)
			}
		}
	}
}
