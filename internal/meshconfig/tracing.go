package meshconfig

import (
	"fmt"
	"net"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Tracing is the Mesh's tracing: the OTLP/gRPC receiver spans are
// exported to and the probability that a request without a caller's
// sampling decision is traced.
type Tracing struct {
	Provider string
	// Address is host:port, dialed over plaintext gRPC.
	Address string
	// Rate is random_sampling_percentage / 100, from 0 to 1.
	Rate float64
}

// compileTracing checks MeshConfig.tracing; nil stays nil.
func compileTracing(t *pb.Tracing) (*Tracing, error) {
	if t == nil {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(t.GetAddress()); err != nil {
		return nil, fmt.Errorf("mesh.tracing %s: address: %w", t.GetProvider(), err)
	}
	p := t.GetRandomSamplingPercentage()
	if !(p >= 0 && p <= 100) {
		return nil, fmt.Errorf("mesh.tracing %s: random_sampling_percentage %v is not from 0 to 100", t.GetProvider(), p)
	}
	return &Tracing{Provider: t.GetProvider(), Address: t.GetAddress(), Rate: p / 100}, nil
}
