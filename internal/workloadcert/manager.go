package workloadcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/backoff"
	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/identity"
)

// Manager obtains the workload certificate with a join token, renews
// it at about half its life (with jitter) using the current certificate,
// and swaps it in atomically: handshakes in flight keep the old one, new
// ones get the new one, no connection is dropped. A fresh key is generated
// for every certificate and never leaves the process. After a CA rotation
// (a config naming another issuer, see FollowCA) or on RenewNow it renews
// at once.
type Manager struct {
	id      spiffeid.ID
	control string
	roots   *x509.CertPool // --ca-file: verify the control plane (see ControlRoots)
	token   string
	clk     clock.Clock
	log     *slog.Logger

	cur    atomic.Pointer[tls.Certificate]
	gotAt  atomic.Int64 // when cur arrived (UnixNano), for the renewal time
	bundle atomic.Pointer[x509.CertPool]
	roots0 atomic.Pointer[[]*x509.Certificate]
	// learned is the latest config's trust bundle (FollowCA).
	learned atomic.Pointer[[]*x509.Certificate]

	// renew wakes Run for an early renewal: forced (RenewNow), or when
	// the certificate is not from wantIssuer (the latest config's).
	renew      chan struct{}
	forced     atomic.Bool
	wantIssuer atomic.Pointer[string]

	renewals atomic.Int64
	failures atomic.Int64

	// OnIssued, when set, is told of every certificate obtained (renewal
	// false for the first). Set it before Obtain.
	OnIssued func(leaf *x509.Certificate, renewal bool)
	// RenewToken, when set, gives the token every renewal sends with the
	// current certificate: in Kubernetes mode the projected
	// ServiceAccount token (the kubelet rotates it in its file), so a
	// deleted pod's or ServiceAccount's certificate is not renewed. Set
	// it before Run.
	RenewToken func() (string, error)
	// Dial, when set, opens the TCP connections to the control plane
	// (transparent mode marks them); nil means gRPC's default dialer. Set
	// it before Obtain.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// New prepares a manager for id, which will ask the control plane at
// controlAddr (verified with controlRoots, the --ca-file) with the join
// token; nothing is requested yet. controlAddr is a gRPC target: HOST:PORT,
// or the proxy's list of several control planes, each request dialing the
// first that answers. A nil clk is the system clock; renewal
// and retry timers run on it.
func New(id spiffeid.ID, controlAddr string, controlRoots *x509.CertPool, token string, log *slog.Logger, clk clock.Clock) *Manager {
	return &Manager{id: id, control: controlAddr, roots: controlRoots, token: token, log: log, clk: clock.Or(clk), renew: make(chan struct{}, 1)}
}

// ID is the workload's SPIFFE ID.
func (m *Manager) ID() spiffeid.ID { return m.id }

// Certificate returns the current leaf with its chain and key, or nil
// before the first.
func (m *Manager) Certificate() *tls.Certificate { return m.cur.Load() }

// Bundle returns the trust bundle delivered with the last certificate.
func (m *Manager) Bundle() *x509.CertPool { return m.bundle.Load() }

// Roots returns the roots delivered with the last certificate.
func (m *Manager) Roots() []*x509.Certificate {
	if r := m.roots0.Load(); r != nil {
		return *r
	}
	return nil
}

// Issuer is the hex SHA-256 of the DER of the CA certificate that issued
// the current certificate (Snapshot.issuer's form), "" before the first.
func (m *Manager) Issuer() string {
	if c := m.cur.Load(); c != nil {
		return leafIssuer(c)
	}
	return ""
}

// leafIssuer is the hex SHA-256 of the first intermediate in c's chain
// (the CA certificate that signed the leaf), "" without one.
func leafIssuer(c *tls.Certificate) string {
	if len(c.Certificate) < 2 {
		return ""
	}
	sum := sha256.Sum256(c.Certificate[1])
	return hex.EncodeToString(sum[:])
}

// RenewNow asks Run to renew at once instead of at half the certificate's
// life. It never blocks; requests made before Run picks one up coalesce.
func (m *Manager) RenewNow() {
	m.forced.Store(true)
	m.wakeRun()
}

// wakeRun signals Run without blocking; a pending signal suffices.
func (m *Manager) wakeRun() {
	select {
	case m.renew <- struct{}{}:
	default:
	}
}

// FollowCA takes what the certificate manager needs from an applied
// config: its trust bundle roots (trusted for the control plane too, see
// ControlRoots) and issuer, the CertID of the intermediate the CA signs
// with ("" for none named). When the current certificate comes from
// another intermediate (the CA rotated), it renews at once. Renewal still
// presents the current certificate, which chains to a root the control
// plane keeps trusting until the rotation ends. roots must not be modified
// afterwards.
func (m *Manager) FollowCA(roots []*x509.Certificate, issuer string) {
	m.learned.Store(&roots)
	if issuer == "" {
		return
	}
	m.wantIssuer.Store(&issuer)
	if c := m.cur.Load(); c != nil && leafIssuer(c) != issuer {
		m.log.Info("the CA signs with a new intermediate; renewing the workload certificate now",
			"spiffe_id", m.id.String(), "issuer", short(issuer), "current_issuer", short(leafIssuer(c)))
		m.wakeRun()
	}
}

// short abbreviates a CertID for logs.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// staleIssuer reports whether c is not from the issuer the latest
// config names.
func (m *Manager) staleIssuer(c *tls.Certificate) bool {
	want := m.wantIssuer.Load()
	return want != nil && *want != leafIssuer(c)
}

// ControlRoots are the roots the control plane (and an external
// collector) are verified with: once a config was followed (FollowCA),
// exactly its trust bundle (so a root retired with `trellis ca retire-old` is no
// longer trusted, whatever --ca-file says); before that, --ca-file's plus
// the bundle of the latest certificate response. A proxy started with the
// ca.crt from before a root rotation so keeps connecting after the control
// plane's certificate moves to the new root.
func (m *Manager) ControlRoots() *x509.CertPool {
	if learned := m.learned.Load(); learned != nil && len(*learned) > 0 {
		pool := x509.NewCertPool()
		for _, r := range *learned {
			pool.AddCert(r)
		}
		return pool
	}
	pool := x509.NewCertPool()
	if m.roots != nil {
		pool = m.roots.Clone()
	}
	for _, rs := range []*[]*x509.Certificate{m.roots0.Load()} {
		if rs != nil {
			for _, r := range *rs {
				pool.AddCert(r)
			}
		}
	}
	return pool
}

// Renewals and Failures count successful renewals and failed attempts.
func (m *Manager) Renewals() int64 { return m.renewals.Load() }

// Failures counts failed certificate requests.
func (m *Manager) Failures() int64 { return m.failures.Load() }

// Obtain gets the first certificate with the join token, retrying with
// backoff until ctx ends. Refusals that will not change on retry (bad or
// revoked token, wrong identity) end it at once.
func (m *Manager) Obtain(ctx context.Context) error {
	b := backoff.Backoff{Min: 250 * time.Millisecond, Max: 15 * time.Second}
	for {
		err := m.request(ctx, m.token, nil)
		if err == nil {
			return nil
		}
		m.failures.Add(1)
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
			return fmt.Errorf("obtain certificate for %s: %w", m.id, err)
		}
		d := b.Next()
		m.log.Warn("cannot obtain workload certificate; retrying", "spiffe_id", m.id.String(), "control", m.control, "err", err, "retry_in", d.Round(time.Millisecond).String())
		if !m.sleep(ctx, d) {
			return fmt.Errorf("obtain certificate for %s: %w", m.id, ctx.Err())
		}
	}
}

// Run renews the certificate until ctx ends. It keeps trying (with backoff)
// when the control plane is away, and says so loudly as expiry nears.
func (m *Manager) Run(ctx context.Context) {
	b := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		cur := m.cur.Load()
		timer := m.clk.NewTimer(m.renewIn(cur.Leaf, time.Unix(0, m.gotAt.Load())))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C():
		case <-m.renew:
			timer.Stop()
			// A request that came while the last renewal ran may be
			// answered already.
			if !m.forced.Swap(false) && !m.staleIssuer(cur) {
				continue
			}
		}
		for {
			token := ""
			var err error
			if m.RenewToken != nil {
				token, err = m.RenewToken()
			}
			if err == nil {
				err = m.request(ctx, token, cur)
			}
			if err == nil {
				m.renewals.Add(1)
				b.Reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			m.failures.Add(1)
			left := cur.Leaf.NotAfter.Sub(m.clk.Now())
			d := min(b.Next(), max(left/4, time.Second))
			lvl := slog.LevelWarn
			if left < time.Hour {
				lvl = slog.LevelError
			}
			m.log.Log(ctx, lvl, "certificate renewal failed; retrying", "spiffe_id", m.id.String(), "expires_in", left.Round(time.Second).String(), "err", err, "retry_in", d.Round(time.Millisecond).String())
			if !m.sleep(ctx, d) {
				return
			}
		}
	}
}

// sleep waits d on the manager's clock; false when ctx ended first.
func (m *Manager) sleep(ctx context.Context, d time.Duration) bool {
	t := m.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// renewIn is the time until renewal: half the remaining life at receipt,
// with ±10% jitter. NotBefore is not used: the CA backdates it for clock
// skew, which would pull renewal early.
func (m *Manager) renewIn(leaf *x509.Certificate, gotAt time.Time) time.Duration {
	life := leaf.NotAfter.Sub(gotAt)
	at := gotAt.Add(life / 2)
	jitter := time.Duration((mrand.Float64()*0.2 - 0.1) * float64(life))
	return max(at.Add(jitter).Sub(m.clk.Now()), 0)
}

// request runs one Certify call on a fresh connection: with the token, or
// (renewal) presenting current as the TLS client certificate.
func (m *Manager) request(ctx context.Context, token string, current *tls.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.id.URL()}}, key)
	if err != nil {
		return fmt.Errorf("create csr: %w", err)
	}
	tlsCfg := identity.SystemServerTLS{
		TrustDomain: m.id.TrustDomain(),
		Accounts:    []string{identity.ControlServiceAccount},
		Roots:       m.ControlRoots,
		Certificate: func() (*tls.Certificate, error) { return current, nil },
		Hint:        CAFileHint,
	}.Config()
	conn, err := grpc.NewClient(m.control, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithContextDialer(m.Dial))
	if err != nil {
		return fmt.Errorf("dial control plane %s: %w", m.control, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := pb.NewIdentityClient(conn).Certify(cctx, &pb.CertifyRequest{Csr: csr, Token: token})
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(resp.GetLeaf())
	if err != nil {
		return fmt.Errorf("certify: leaf: %w", err)
	}
	if got, err := identity.SPIFFEIDFromCert(leaf); err != nil || got != m.id {
		return fmt.Errorf("certify: leaf names %v, want %s", leaf.URIs, m.id)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("certify: leaf is not for our key")
	}
	pool := x509.NewCertPool()
	var roots []*x509.Certificate
	for i, der := range resp.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("certify: trust_bundle[%d]: %w", i, err)
		}
		pool.AddCert(c)
		roots = append(roots, c)
	}
	cert := &tls.Certificate{Certificate: [][]byte{resp.GetLeaf()}, PrivateKey: key, Leaf: leaf}
	cert.Certificate = append(cert.Certificate, resp.GetIntermediates()...)
	m.bundle.Store(pool)
	m.roots0.Store(&roots)
	m.gotAt.Store(m.clk.Now().UnixNano())
	m.cur.Store(cert)
	if m.OnIssued != nil {
		m.OnIssued(leaf, current != nil)
	}
	m.log.Info("workload certificate obtained", "spiffe_id", m.id.String(), "serial", leaf.SerialNumber.Text(16),
		"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "renewal", current != nil)
	return nil
}

// CAFileHint follows a failure to verify the control plane's chain.
const CAFileHint = "is --ca-file the control plane's ca.crt?"
