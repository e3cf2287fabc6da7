//go:build !trellis_nokube

package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/store"
	"github.com/trellismesh/trellis/internal/store/etcd"
)

// etcdFlags are the etcd backend's flags (--store etcd://...).
type etcdFlags struct {
	caFile, certFile, keyFile, prefix string
}

func (e *etcdFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.caFile, "etcd-ca-file", "", "with --store etcd://: PEM file of the CA that signed the etcd members' serving certificates")
	f.StringVar(&e.certFile, "etcd-cert-file", "", "with --store etcd://: PEM client certificate for etcd's --client-cert-auth (with --etcd-key-file)")
	f.StringVar(&e.keyFile, "etcd-key-file", "", "with --store etcd://: PEM key of --etcd-cert-file")
	f.StringVar(&e.prefix, "etcd-prefix", etcd.DefaultPrefix, "with --store etcd://: prefix of every key in etcd; control planes of different meshes can share a cluster under prefixes that do not nest")
}

// etcdOpener checks the etcd flags, with hosts the part of --store after
// etcd:// (TLS unless every member is on loopback), and returns what opens
// the store.
func etcdOpener(hosts string, e etcdFlags) (func(context.Context) (store.Store, error), error) {
	eps, err := etcdEndpoints(hosts)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(e.prefix, "/") || strings.HasSuffix(e.prefix, "/") {
		return nil, fmt.Errorf("--etcd-prefix %q: want a path such as /trellis (starting with /, without a trailing /)", e.prefix)
	}
	tlsCfg, err := e.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tlsCfg == nil {
		for _, ep := range eps {
			if !loopback(ep) {
				return nil, fmt.Errorf("--store %s%s: %s is not on loopback and no TLS flags are given: give --etcd-ca-file, and --etcd-cert-file with --etcd-key-file when etcd requires client certificates (plaintext would expose the mesh's state)", etcdScheme, hosts, ep)
			}
		}
	}
	cfg := etcd.Config{Endpoints: eps, Prefix: e.prefix, TLS: tlsCfg}
	return func(ctx context.Context) (store.Store, error) { return etcd.Open(ctx, cfg) }, nil
}

// etcdEndpoints splits HOST:PORT[,HOST:PORT...].
func etcdEndpoints(hosts string) ([]string, error) {
	var eps []string
	for ep := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(ep)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("--store %s%s: endpoint %q: want HOST:PORT (etcd's client port, often 2379)", etcdScheme, hosts, ep)
		}
		eps = append(eps, ep)
	}
	return eps, nil
}

func loopback(ep string) bool {
	host, _, _ := net.SplitHostPort(ep)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig is the client TLS of the --etcd-* file flags, nil when none
// is given.
func (e etcdFlags) tlsConfig() (*tls.Config, error) {
	if e.caFile == "" && e.certFile == "" && e.keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (e.certFile == "") != (e.keyFile == "") {
		return nil, errors.New("--etcd-cert-file and --etcd-key-file go together: give both or neither")
	}
	if e.certFile != "" {
		cert, err := tls.LoadX509KeyPair(e.certFile, e.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file %s, --etcd-key-file %s: %w", e.certFile, e.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if e.caFile != "" {
		pem, err := os.ReadFile(e.caFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca-file %s: no PEM certificate in it", e.caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// The etcd store elects the replica that runs the control plane's
// singletons.
var _ controlplane.Elector = (*etcd.Store)(nil)
