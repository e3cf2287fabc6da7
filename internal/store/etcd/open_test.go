package etcd_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/etcd"
	"github.com/trellismesh/trellis/internal/testutil/etcdtest"
)

// TestOpenConfigErrors: a bad Config is refused before dialing, naming the
// field.
func TestOpenConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  etcd.Config
		want string
	}{
		{"no endpoints", etcd.Config{}, "no endpoints"},
		{"URL", etcd.Config{Endpoints: []string{"https://127.0.0.1:2379"}}, `endpoint "https://127.0.0.1:2379": want HOST:PORT`},
		{"no port", etcd.Config{Endpoints: []string{"127.0.0.1"}}, `endpoint "127.0.0.1": want HOST:PORT`},
		{"negative timeout", etcd.Config{Endpoints: []string{"127.0.0.1:2379"}, RequestTimeout: -1}, "must not be negative"},
	} {
		_, err := etcd.Open(t.Context(), tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: Open = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestOpenUnreachable: Open on an address nothing listens on fails within
// its DialTimeout with store.ErrUnavailable and the reason.
func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = etcd.Open(t.Context(), etcd.Config{Endpoints: []string{addr}, DialTimeout: time.Second})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Open took %v with DialTimeout 1s", took)
	}
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Open = %v, want store.ErrUnavailable saying the connection was refused", err)
	}
}

// TestOpenTLSErrors: a cluster that requires client certificates refuses a
// client without one, one that does not trust its CA, or one without TLS,
// and Open says why instead of only timing out; these are not
// store.ErrUnavailable, as retrying would not help.
func TestOpenTLSErrors(t *testing.T) {
	c := etcdtest.Start(t, 1)
	noCert := c.ClientTLS()
	noCert.Certificates = nil
	wrongCA := c.ClientTLS()
	wrongCA.RootCAs = x509.NewCertPool()
	for _, tt := range []struct {
		name string
		tls  *tls.Config
		want string
	}{
		{"no client certificate", noCert, "certificate required"},
		{"unknown CA", wrongCA, "certificate signed by unknown authority"},
		{"plaintext", nil, "the server speaks TLS"},
	} {
		start := time.Now()
		_, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints(), TLS: tt.tls, DialTimeout: time.Second})
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("%s: Open took %v with DialTimeout 1s", tt.name, took)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: Open = %v, want an error containing %q, not store.ErrUnavailable", tt.name, err, tt.want)
		}
		t.Logf("%s: %v", tt.name, err)
	}
}
