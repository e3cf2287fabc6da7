package jointoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/atomicfile"
	"github.com/trellismesh/trellis/internal/identity"
)

const (
	tokenKeyFile  = "ca/token-signing.key"
	tokenIssuer   = "trellis-control"
	tokenAudience = "trellis-identity"
	// MaxTTL bounds join token lifetimes.
	MaxTTL = 365 * 24 * time.Hour
)

// Typed token errors; the gRPC edge maps them to status codes.
var (
	// ErrInvalid: malformed, badly signed, wrong issuer/audience, or
	// claims that do not name one workload identity.
	ErrInvalid = errors.New("join token invalid")
	// ErrExpired: expired or not yet valid.
	ErrExpired = errors.New("join token expired")
)

// Claims is what a verified join token entitles its bearer to.
type Claims struct {
	ID             string      `json:"id"`
	SPIFFEID       spiffeid.ID `json:"-"`
	Service        string      `json:"service"`
	Namespace      string      `json:"namespace"`
	ServiceAccount string      `json:"serviceAccount"`
	IssuedAt       time.Time   `json:"issuedAt"`
	ExpiresAt      time.Time   `json:"expiresAt"`
}

type jwtClaims struct {
	jwt.RegisteredClaims
	Service        string `json:"svc"`
	Namespace      string `json:"ns"`
	ServiceAccount string `json:"sa"`
}

// Authority issues and verifies join tokens with an ECDSA P-256 key
// (ES256). It is safe for concurrent use.
type Authority struct {
	td  spiffeid.TrustDomain
	now func() time.Time
	key *ecdsa.PrivateKey
	kid string
}

// LoadOrCreate loads the token signing key under dataDir,
// creating it (0600) at first start.
func LoadOrCreate(dataDir string, td spiffeid.TrustDomain, opts Options) (*Authority, error) {
	path := filepath.Join(dataDir, tokenKeyFile)
	var key *ecdsa.PrivateKey
	signer, err := identity.ReadKeyFile(path)
	switch {
	case err == nil:
		k, ok := signer.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("load token key %s: want an ECDSA P-256 key", path)
		}
		key = k
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
		pemKey, err := identity.EncodeKeyPEM(key)
		if err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
		if err := atomicfile.WriteFile(path, pemKey, 0o600); err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
	default:
		return nil, fmt.Errorf("load token key: %w", err)
	}
	return New(key, td, opts), nil
}

// New wraps an existing signing key.
func New(key *ecdsa.PrivateKey, td spiffeid.TrustDomain, opts Options) *Authority {
	pub, _ := key.PublicKey.ECDH()
	sum := sha256.Sum256(pub.Bytes())
	return &Authority{td: td, now: opts.now(), key: key, kid: hex.EncodeToString(sum[:8])}
}

// Issue signs a join token for spiffe://<td>/ns/<namespace>/sa/<serviceAccount>
// valid for ttl, with a random unique ID.
func (a *Authority) Issue(service, namespace, serviceAccount string, ttl time.Duration) (string, Claims, error) {
	if ttl <= 0 || ttl > MaxTTL {
		return "", Claims{}, fmt.Errorf("issue token: ttl %s out of range (0, %s]", ttl, MaxTTL)
	}
	id, err := identity.WorkloadID(a.td, namespace, serviceAccount)
	if err != nil {
		return "", Claims{}, fmt.Errorf("issue token: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", Claims{}, fmt.Errorf("issue token: %w", err)
	}
	now := a.now().Truncate(time.Second)
	c := jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   id.String(),
			Audience:  jwt.ClaimStrings{tokenAudience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now.Add(-identity.MaxBackdate)),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(raw[:]),
		},
		Service:        service,
		Namespace:      namespace,
		ServiceAccount: serviceAccount,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = a.kid
	s, err := t.SignedString(a.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("issue token: %w", err)
	}
	return s, Claims{ID: c.ID, SPIFFEID: id, Service: service, Namespace: namespace, ServiceAccount: serviceAccount, IssuedAt: now, ExpiresAt: now.Add(ttl)}, nil
}

// Verify checks a token's signature, issuer, audience and validity window and
// returns the identity it entitles. Revocation is the caller's check, by ID.
func (a *Authority) Verify(token string) (Claims, error) {
	var c jwtClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return &a.key.PublicKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) || errors.Is(err, jwt.ErrTokenNotValidYet) {
			return Claims{}, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// iat is checked here, not with jwt.WithIssuedAt: that allows no skew,
	// defeating the identity.MaxBackdate that nbf is backdated by.
	if c.IssuedAt == nil {
		return Claims{}, fmt.Errorf("%w: no iat claim", ErrInvalid)
	}
	if c.IssuedAt.After(a.now().Add(identity.MaxBackdate)) {
		return Claims{}, fmt.Errorf("%w: issued in the future, at %s", ErrExpired, c.IssuedAt.Format(time.RFC3339))
	}
	id, ns, sa, err := identity.ParseWorkloadID(c.Subject)
	if err != nil || id.TrustDomain() != a.td || ns != c.Namespace || sa != c.ServiceAccount || c.ID == "" || c.Service == "" {
		return Claims{}, fmt.Errorf("%w: claims do not name one workload identity in trust domain %s", ErrInvalid, a.td)
	}
	return Claims{
		ID: c.ID, SPIFFEID: id, Service: c.Service, Namespace: ns, ServiceAccount: sa,
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

// Options configures an Authority. Zero values mean the documented defaults.
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

// LooksLikeJoinToken reports whether token claims to be a join token (its
// issuer, read without verifying): the control plane then verifies it as
// one, and hands other tokens (Kubernetes mode's ServiceAccount tokens) to
// their own reviewer.
func LooksLikeJoinToken(token string) bool {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		return true // malformed: verify says why, as a join token
	}
	return claims.Issuer == tokenIssuer
}
