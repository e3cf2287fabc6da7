package meshca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/identity"
)

// Lifetimes of the CA generated at first start and at every rotation.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IntermediateTTL = 365 * 24 * time.Hour
)

// Files of a generated CA, relative to the data dir. The CA made at first
// start lives in the flat files below; every rotation or retirement writes
// a generation directory (see rotate.go) and ca/current names it. The
// trust bundle (every root, public) is identity.RootCertFile.
const (
	caDir                = "ca"
	rootKeyFile          = "ca/root.key"
	intermediateCertFile = "ca/intermediate.crt"
	intermediateKeyFile  = "ca/intermediate.key"
)

// CA signs workload certificates with an intermediate chained to the mesh
// root(s). Its methods are safe for concurrent use: signing reads one
// consistent state, and Rotate and RetireOld replace that state whole.
type CA struct {
	td  spiffeid.TrustDomain
	now func() time.Time
	// dataDir is where a generated CA persists; external: the user's CA
	// (LoadExternal), which Trellis cannot rotate.
	dataDir  string
	external bool

	mu    sync.Mutex // serializes Rotate and RetireOld
	state atomic.Pointer[caState]
	// hook, when set (tests), is called at each step of a rotation's
	// write; an error stops it there, as a crash would.
	hook func(step string) error
}

// caState is one immutable CA configuration.
type caState struct {
	issuer        *x509.Certificate
	key           crypto.Signer
	intermediates []*x509.Certificate // issuer first, then the chain up to (excluding) the roots
	roots         []*x509.Certificate // the trust bundle, oldest first
	active        *x509.Certificate   // the root the issuer chains to
	pool          *x509.CertPool      // roots
	issuerID      string
	rootIDs       []string
	// gen is the generation directory the state was loaded from or
	// written to ("" for the flat first-start files or an external CA);
	// rootKeyFile holds the active root's key ("" for an external CA).
	gen         string
	rootKeyFile string
}

// Options configures a CA. Zero values mean the documented defaults.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o Options) now() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}

// LoadOrCreate loads the CA kept under dataDir, creating an ECDSA P-256
// root (10 years) and intermediate (1 year) at first start. Keys are written
// 0600; the trust bundle (every root) is also written to dataDir/ca.crt for
// proxies and CLIs to trust. created reports whether a new CA was made.
//
// A data dir that went through a rotation is loaded from the generation
// ca/current names; one written before rotations existed (only the flat
// files) loads as before.
func LoadOrCreate(dataDir string, td spiffeid.TrustDomain, opts Options) (ca *CA, created bool, err error) {
	ca = &CA{td: td, now: opts.now(), dataDir: dataDir}
	gen, err := readCurrentGeneration(dataDir)
	if err != nil {
		return nil, false, err
	}
	if gen != "" {
		st, err := loadGeneration(dataDir, gen, ca.now())
		if err != nil {
			return nil, false, err
		}
		// A crash between switching ca/current and rewriting ca.crt
		// leaves ca.crt one step behind: bring it up to date.
		if err := writeBundleIfChanged(dataDir, st.roots); err != nil {
			return nil, false, fmt.Errorf("load ca: %w", err)
		}
		ca.state.Store(st)
		return ca, false, nil
	}
	interPath := filepath.Join(dataDir, intermediateCertFile)
	if _, err := os.Stat(interPath); err == nil {
		st, err := loadFlat(dataDir, ca.now())
		if err != nil {
			return nil, false, err
		}
		ca.state.Store(st)
		return ca, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("load ca: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, caDir), 0o700); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	t := ca.now()
	rootKey, root, interKey, inter, err := newRootAndIntermediate(td, t, "")
	if err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	for _, f := range []struct {
		path string
		key  crypto.Signer
	}{{rootKeyFile, rootKey}, {intermediateKeyFile, interKey}} {
		pemKey, err := identity.EncodeKeyPEM(f.key)
		if err != nil {
			return nil, false, fmt.Errorf("create ca: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dataDir, f.path), pemKey, 0o600); err != nil {
			return nil, false, fmt.Errorf("create ca: %w", err)
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dataDir, identity.RootCertFile), identity.EncodeCertsPEM(root), 0o644); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	// The intermediate is written last: its presence marks a complete CA.
	if err := atomicfile.WriteFile(interPath, identity.EncodeCertsPEM(inter), 0o644); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	st, err := newCAState([]*x509.Certificate{inter}, interKey, []*x509.Certificate{root}, t)
	if err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	st.rootKeyFile = filepath.Join(dataDir, rootKeyFile)
	ca.state.Store(st)
	return ca, true, nil
}

// newRootAndIntermediate makes a self-signed root (RootTTL) and an
// intermediate (IntermediateTTL, path length 0) signed by it. suffix tells
// the names of a rotation's CA certificates apart from earlier ones.
func newRootAndIntermediate(td spiffeid.TrustDomain, t time.Time, suffix string) (rootKey crypto.Signer, root *x509.Certificate, interKey crypto.Signer, inter *x509.Certificate, err error) {
	rk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	root, err = createCACert(&x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Trellis"}, CommonName: "Trellis root CA " + td.Name() + suffix},
		NotBefore: t.Add(-identity.MaxBackdate),
		NotAfter:  t.Add(RootTTL),
		URIs:      []*url.URL{td.ID().URL()},
	}, nil, rk, rk, -1)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("root: %w", err)
	}
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	inter, err = createCACert(&x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Trellis"}, CommonName: "Trellis intermediate CA " + td.Name() + suffix},
		NotBefore: t.Add(-identity.MaxBackdate),
		NotAfter:  t.Add(IntermediateTTL),
		URIs:      []*url.URL{td.ID().URL()},
	}, root, ik, rk, 0)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("intermediate: %w", err)
	}
	return rk, root, ik, inter, nil
}

// loadFlat loads the files written at first start: the intermediate and its
// key under ca/, the trust bundle in ca.crt.
func loadFlat(dataDir string, now time.Time) (*caState, error) {
	certFile, keyFile := filepath.Join(dataDir, intermediateCertFile), filepath.Join(dataDir, intermediateKeyFile)
	chain, err := identity.ReadCertsFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	bundle, err := identity.ReadCertsFile(filepath.Join(dataDir, identity.RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := identity.ReadKeyFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	if !publicKeyEqual(key.Public(), chain[0].PublicKey) {
		return nil, fmt.Errorf("load ca: key %s does not match certificate %s", keyFile, certFile)
	}
	st, err := newCAState(chain, key, bundle, now)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w; if the intermediate expired, issue a new one (or start from a new --data-dir)", certFile, err)
	}
	st.rootKeyFile = filepath.Join(dataDir, rootKeyFile)
	return st, nil
}

// LoadExternal loads an intermediate issued by the user's own PKI.
// certFile holds the intermediate first, then any further intermediates, and
// ends with the self-signed root; keyFile holds the intermediate's key (mode
// 0600). The root is what proxies will trust. An external CA is rotated in
// the user's PKI, never by Trellis (Rotate and RetireOld refuse).
func LoadExternal(certFile, keyFile string, td spiffeid.TrustDomain, opts Options) (*CA, error) {
	now := opts.now()
	chain, err := identity.ReadCertsFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := identity.ReadKeyFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	issuer := chain[0]
	if !issuer.IsCA || !issuer.BasicConstraintsValid {
		return nil, fmt.Errorf("load ca %s: first certificate %q is not a CA certificate", certFile, issuer.Subject)
	}
	if !publicKeyEqual(key.Public(), issuer.PublicKey) {
		return nil, fmt.Errorf("load ca: key %s does not match certificate %s", keyFile, certFile)
	}
	last := chain[len(chain)-1]
	if len(chain) < 2 || last.CheckSignatureFrom(last) != nil {
		return nil, fmt.Errorf("load ca %s: the file must hold the intermediate followed by its chain, ending with the self-signed root", certFile)
	}
	st, err := newCAState(chain[:len(chain)-1], key, []*x509.Certificate{last}, now())
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w; if the intermediate expired, issue a new one (or start from a new --data-dir)", certFile, err)
	}
	ca := &CA{td: td, now: now, external: true}
	ca.state.Store(st)
	return ca, nil
}

// newCAState checks that chain[0] (the issuer, a CA certificate whose key
// is key) chains through chain[1:] to one of roots at now, and finds the
// active root: the one that signed the issuer directly, else the first the
// chain verifies to.
func newCAState(chain []*x509.Certificate, key crypto.Signer, roots []*x509.Certificate, now time.Time) (*caState, error) {
	issuer := chain[0]
	if !issuer.IsCA || !issuer.BasicConstraintsValid {
		return nil, fmt.Errorf("certificate %q is not a CA certificate", issuer.Subject)
	}
	if !publicKeyEqual(key.Public(), issuer.PublicKey) {
		return nil, fmt.Errorf("the key does not match certificate %q", issuer.Subject)
	}
	var active *x509.Certificate
	for _, r := range roots {
		if issuer.CheckSignatureFrom(r) == nil {
			active = r
			break
		}
	}
	var verr error
	if active == nil {
		for _, r := range roots {
			if verr = verifyChain(issuer, chain[1:], []*x509.Certificate{r}, now); verr == nil {
				active = r
				break
			}
		}
		if active == nil {
			return nil, verr
		}
	} else if err := verifyChain(issuer, chain[1:], []*x509.Certificate{active}, now); err != nil {
		return nil, err
	}
	st := &caState{issuer: issuer, key: key, intermediates: chain, roots: roots, active: active, pool: x509.NewCertPool(), issuerID: identity.CertID(issuer)}
	for _, r := range roots {
		st.pool.AddCert(r)
		st.rootIDs = append(st.rootIDs, identity.CertID(r))
	}
	return st, nil
}

func verifyChain(c *x509.Certificate, inters, roots []*x509.Certificate, now time.Time) error {
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, i := range inters {
		interPool.AddCert(i)
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: interPool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("verify intermediate against root: %w", err)
	}
	return nil
}

// createCACert signs tmpl as a CA certificate for key. parent nil means
// self-signed. maxPathLen -1 means unlimited.
func createCACert(tmpl, parent *x509.Certificate, key, parentKey crypto.Signer, maxPathLen int) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	if maxPathLen >= 0 {
		tmpl.MaxPathLen = maxPathLen
		tmpl.MaxPathLenZero = maxPathLen == 0
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func (ca *CA) current() *caState { return ca.state.Load() }

// TrustDomain is the trust domain the CA issues identities in.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Roots returns the trust bundle, oldest first (more than one root while a
// rotation is in progress). The caller must not modify it.
func (ca *CA) Roots() []*x509.Certificate { return ca.current().roots }

// RootPool returns the trust bundle as a pool, shared until the next
// rotation or retirement. The caller must not modify it.
func (ca *CA) RootPool() *x509.CertPool { return ca.current().pool }

// RootIDs returns identity.CertID of every root, in Roots order.
func (ca *CA) RootIDs() []string { return ca.current().rootIDs }

// ActiveRoot is the root the signing intermediate chains to.
func (ca *CA) ActiveRoot() *x509.Certificate { return ca.current().active }

// Intermediates returns the chain between leaves and the roots, issuer
// first. During a rotation it also holds the new root cross-signed by the
// previous one, so peers that trust only the old root still verify new
// leaves. The caller must not modify it.
func (ca *CA) Intermediates() []*x509.Certificate { return ca.current().intermediates }

// IssuerID is identity.CertID of the intermediate that signs leaves now.
func (ca *CA) IssuerID() string { return ca.current().issuerID }

// IntermediateExpiry is when the signing certificate expires; leaves are
// never issued past it.
func (ca *CA) IntermediateExpiry() time.Time { return ca.current().issuer.NotAfter }

// External reports whether the CA is the user's (LoadExternal), which
// Trellis cannot rotate.
func (ca *CA) External() bool { return ca.external }

func publicKeyEqual(a crypto.PublicKey, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
