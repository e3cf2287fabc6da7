package meshca_test

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/meshca"
)

// The serving certificate names the listen addresses, is cached until half
// its life, and is reissued from the current intermediate once
// invalidated.
func TestServingCert(t *testing.T) {
	ca, clk, _ := newClockCA(t)
	sc, err := meshca.NewServingCert(ca, clk.Now, "127.0.0.1:15012", "ctl.example:15014", "no-port")
	if err != nil {
		t.Fatal(err)
	}
	first, err := sc.Get()
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if !slices.Contains(leaf.DNSNames, "localhost") || !slices.Contains(leaf.DNSNames, "ctl.example") ||
		!slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv6loopback) }) {
		t.Errorf("serving certificate names %v %v, want localhost, ctl.example and the loopback addresses", leaf.DNSNames, leaf.IPAddresses)
	}
	if again, _ := sc.Get(); again != first {
		t.Error("a second Get reissued the certificate")
	}
	half := leaf.NotAfter.Sub(leaf.NotBefore) / 2
	clk.Advance(half + time.Second)
	if later, _ := sc.Get(); later == first {
		t.Error("the certificate was not reissued after half its life")
	}

	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	sc.Invalidate()
	rotated, err := sc.Get()
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.Leaf.CheckSignatureFrom(ca.Intermediates()[0]); err != nil {
		t.Errorf("after a rotation and Invalidate the certificate is not from the new intermediate: %v", err)
	}
	if cfg := sc.TLSConfig(true); cfg.GetConfigForClient == nil || cfg.MinVersion == 0 {
		t.Error("TLSConfig(true) does not verify client certificates per handshake")
	}
}
