package controlplane

import (
	"testing"
	"time"
)

func TestConvergence(t *testing.T) {
	var observed []time.Duration
	abandoned := 0
	c := &convergence{observe: func(d time.Duration) { observed = append(observed, d) }, abandon: func() { abandoned++ }}
	start := time.Now()

	c.offered(1, start, "a", "2")
	c.offered(1, start, "b", "5")
	c.acked("a", "2") // before the round is sealed
	c.seal(1)
	c.acked("b", "4") // an older version: still waiting
	if len(observed) != 0 {
		t.Fatalf("observed %v before every proxy acked", observed)
	}
	c.acked("b", "5")
	if len(observed) != 1 || abandoned != 0 {
		t.Fatalf("observed %v abandoned %d, want one sample", observed, abandoned)
	}
	c.acked("b", "5")
	if len(observed) != 1 {
		t.Fatalf("a second ACK observed again: %v", observed)
	}

	c.offered(2, start, "a", "3")
	c.seal(2)
	c.offered(3, start, "a", "4") // supersedes round 2
	c.seal(3)
	c.acked("a", "3")
	if abandoned != 1 || len(observed) != 1 {
		t.Fatalf("observed %v abandoned %d, want round 2 abandoned", observed, abandoned)
	}
	c.gone("a") // a proxy that left is not waited for
	if len(observed) != 2 {
		t.Fatalf("observed %v, want round 3 done once its only proxy left", observed)
	}
	c.seal(4) // a round that offered nothing
	if len(observed) != 2 || abandoned != 1 {
		t.Fatalf("observed %v abandoned %d after an empty round", observed, abandoned)
	}
}
