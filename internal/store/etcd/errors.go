package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/store"
)

// wrap names the operation in err and maps it onto the store's errors:
// store.ErrClosed after Close, the caller's own cancellation as it is, and
// anything that means the cluster did not answer (no connection, no leader,
// a timeout) as store.ErrUnavailable. ctx is the caller's context.
func (s *Store) wrap(ctx context.Context, what string, err error) error {
	switch {
	case s.isClosed():
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return fmt.Errorf("%s: %w", what, err)
	case unavailable(err):
		return s.unavailableErr(what, err)
	case errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%s: %w: etcd refused it (%v): write less at once, or raise --max-txn-ops / --max-request-bytes on every etcd member", what, store.ErrTooLarge, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

func (s *Store) unavailableErr(what string, cause error) error {
	return fmt.Errorf("%s: %w: the etcd quorum is unreachable through %s (%w); retry later", what, store.ErrUnavailable, s.eps, cause)
}

// unavailable reports whether err says the cluster did not answer: gRPC's
// Unavailable (no connection; etcd's "no leader", "leader changed",
// "request timed out", "server stopped") or a deadline.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}

// openError explains Open's failure: gRPC waits for a connection until the
// deadline and then says only that, hiding a refused connection or a TLS
// problem that the user has to fix. A TLS problem is not ErrUnavailable:
// retrying will not help.
func (s *Store) openError(ctx context.Context, err error) error {
	if !unavailable(err) || ctx.Err() != nil {
		return s.wrap(ctx, "etcd open", err)
	}
	for _, ep := range s.cfg.Endpoints {
		tlsProblem, perr := probe(ctx, ep, s.cfg.TLS)
		switch {
		case perr == nil:
			continue
		case tlsProblem:
			return fmt.Errorf("etcd open: %s: %w", ep, perr)
		default:
			return s.unavailableErr("etcd open", fmt.Errorf("%s: %w", ep, perr))
		}
	}
	return s.unavailableErr("etcd open", err)
}

// probe dials ep and, with TLS, completes a handshake, which a server that
// requires client certificates fails when it refuses ours. Without TLS it
// tries one anyway, to tell a TLS server. tlsProblem says the error is
// about TLS rather than reaching ep.
func probe(ctx context.Context, ep string, cfg *tls.Config) (tlsProblem bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if cfg == nil {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if tc.HandshakeContext(ctx) == nil {
			return true, errors.New("the server speaks TLS and this client was given no TLS configuration (a CA and a client certificate)")
		}
		return false, nil
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(ep)
	}
	c.NextProtos = []string{"h2"}
	tc := tls.Client(conn, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		return true, fmt.Errorf("TLS handshake: %w", err)
	}
	// TLS 1.3 servers refuse a client certificate after the handshake:
	// read, to see the alert.
	_ = tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil && !isTimeout(err) {
		return true, fmt.Errorf("TLS handshake: %w", err)
	}
	return false, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
