package identity

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
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Lifetimes of the CA generated at first start.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IntermediateTTL = 365 * 24 * time.Hour
	// MaxBackdate is how far before "now" a leaf's NotBefore is set, to
	// absorb clock skew between the control plane and peers.
	MaxBackdate = time.Minute
)

// Files of a generated CA, relative to the data dir.
const (
	RootCertFile         = "ca.crt" // the mesh root, public
	caDir                = "ca"
	rootKeyFile          = "ca/root.key"
	intermediateCertFile = "ca/intermediate.crt"
	intermediateKeyFile  = "ca/intermediate.key"
)

// CA signs workload certificates with an intermediate chained to the mesh
// root(s). A CA is immutable after construction and safe for concurrent use.
type CA struct {
	td            spiffeid.TrustDomain
	now           func() time.Time
	issuer        *x509.Certificate
	key           crypto.Signer
	intermediates []*x509.Certificate // issuer first, excluding roots
	roots         []*x509.Certificate
}

// CAOptions configures a CA. Zero values mean the documented defaults.
type CAOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o CAOptions) now() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}

// LoadOrCreateCA loads the CA kept under dataDir, creating an ECDSA P-256
// root (10 years) and intermediate (1 year) at first start. Keys are written
// 0600; the root certificate is also written to dataDir/ca.crt for proxies
// and CLIs to trust. created reports whether a new CA was made.
func LoadOrCreateCA(dataDir string, td spiffeid.TrustDomain, opts CAOptions) (ca *CA, created bool, err error) {
	now := opts.now()
	interPath := filepath.Join(dataDir, intermediateCertFile)
	if _, err := os.Stat(interPath); err == nil {
		ca, err := loadCA(filepath.Join(dataDir, intermediateCertFile), filepath.Join(dataDir, intermediateKeyFile), filepath.Join(dataDir, RootCertFile), td, now)
		return ca, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("load ca: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, caDir), 0o700); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	t := now()
	root, err := createCACert(&x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Trellis"}, CommonName: "Trellis root CA " + td.Name()},
		NotBefore: t.Add(-MaxBackdate),
		NotAfter:  t.Add(RootTTL),
		URIs:      []*url.URL{td.ID().URL()},
	}, nil, rootKey, rootKey, -1)
	if err != nil {
		return nil, false, fmt.Errorf("create ca root: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	inter, err := createCACert(&x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"Trellis"}, CommonName: "Trellis intermediate CA " + td.Name()},
		NotBefore: t.Add(-MaxBackdate),
		NotAfter:  t.Add(IntermediateTTL),
		URIs:      []*url.URL{td.ID().URL()},
	}, root, interKey, rootKey, 0)
	if err != nil {
		return nil, false, fmt.Errorf("create ca intermediate: %w", err)
	}
	for _, f := range []struct {
		path string
		key  crypto.Signer
	}{{rootKeyFile, rootKey}, {intermediateKeyFile, interKey}} {
		pemKey, err := EncodeKeyPEM(f.key)
		if err != nil {
			return nil, false, fmt.Errorf("create ca: %w", err)
		}
		if err := WriteFileAtomic(filepath.Join(dataDir, f.path), pemKey, 0o600); err != nil {
			return nil, false, fmt.Errorf("create ca: %w", err)
		}
	}
	if err := WriteFileAtomic(filepath.Join(dataDir, RootCertFile), EncodeCertsPEM(root), 0o644); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	// The intermediate is written last: its presence marks a complete CA.
	if err := WriteFileAtomic(interPath, EncodeCertsPEM(inter), 0o644); err != nil {
		return nil, false, fmt.Errorf("create ca: %w", err)
	}
	return &CA{td: td, now: now, issuer: inter, key: interKey, intermediates: []*x509.Certificate{inter}, roots: []*x509.Certificate{root}}, true, nil
}

// LoadExternalCA loads an intermediate issued by the user's own PKI.
// certFile holds the intermediate first, then any further intermediates, and
// ends with the self-signed root; keyFile holds the intermediate's key (mode
// 0600). The root is what proxies will trust.
func LoadExternalCA(certFile, keyFile string, td spiffeid.TrustDomain, opts CAOptions) (*CA, error) {
	return loadCA(certFile, keyFile, "", td, opts.now())
}

func loadCA(certFile, keyFile, rootFile string, td spiffeid.TrustDomain, now func() time.Time) (*CA, error) {
	chain, err := ReadCertsFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	// Our own CA keeps its roots in ca.crt, which holds every root of the
	// trust bundle (more than one while a root rotation is in progress).
	var bundle []*x509.Certificate
	if rootFile != "" {
		if bundle, err = ReadCertsFile(rootFile); err != nil {
			return nil, fmt.Errorf("load ca: %w", err)
		}
		chain = append(chain, bundle[len(bundle)-1])
	}
	key, err := ReadKeyFile(keyFile)
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
	roots := []*x509.Certificate{last}
	inters := chain[:len(chain)-1]
	if bundle != nil {
		roots = bundle
	}
	if err := verifyChain(issuer, inters[1:], roots, now()); err != nil {
		return nil, fmt.Errorf("load ca %s: %w; if the intermediate expired, issue a new one (or start from a new --data-dir)", certFile, err)
	}
	return &CA{td: td, now: now, issuer: issuer, key: key, intermediates: inters, roots: roots}, nil
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

// createCACert signs tmpl as a CA certificate. parent nil means self-signed.
// maxPathLen -1 means unlimited.
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

// TrustDomain is the trust domain the CA issues identities in.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Roots returns the trust bundle. The caller must not modify it.
func (ca *CA) Roots() []*x509.Certificate { return ca.roots }

// Intermediates returns the chain between leaves and the roots, issuer
// first. The caller must not modify it.
func (ca *CA) Intermediates() []*x509.Certificate { return ca.intermediates }

// IntermediateExpiry is when the signing certificate expires; leaves are
// never issued past it.
func (ca *CA) IntermediateExpiry() time.Time { return ca.issuer.NotAfter }
