package meshconfig

import (
	"encoding/json"
	"fmt"

	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/resource"
)

// compileEgress turns the snapshot's EgressPolicies (already selected for
// this workload by the control plane) into the capture listener's rules;
// nil when none select the workload.
func compileEgress(raws [][]byte) (*egress.Rules, error) {
	if len(raws) == 0 {
		return nil, nil
	}
	ps := make([]egress.Policy, 0, len(raws))
	for i, raw := range raws {
		var o resource.Object
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("egress_policies[%d]: %w", i, err)
		}
		if err := resource.Validate(&o); err != nil {
			return nil, fmt.Errorf("egress_policies[%d]: %w", i, err)
		}
		p, err := egress.FromObject(&o)
		if err != nil {
			return nil, fmt.Errorf("egress_policies[%d]: %w", i, err)
		}
		ps = append(ps, p)
	}
	return egress.NewRules(ps), nil
}
