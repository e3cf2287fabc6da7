package identity

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
)

const (
	tokenKeyFile  = "ca/token-signing.key"
	tokenIssuer   = "trellis-control"
	tokenAudience = "trellis-identity"
	// MaxTokenTTL bounds join token lifetimes.
	MaxTokenTTL = 365 * 24 * time.Hour
)

// Typed token errors; the gRPC edge maps them to status codes.
var (
	// ErrTokenInvalid: malformed, badly signed, wrong issuer/audience, or
	// claims that do not name one workload identity.
	ErrTokenInvalid = errors.New("join token invalid")
	// ErrTokenExpired: expired or not yet valid.
	ErrTokenExpired = errors.New("join token expired")
)

// TokenClaims is what a verified join token entitles its bearer to.
type TokenClaims struct {
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

// TokenAuthority issues and verifies join tokens with an ECDSA P-256 key
// (ES256). It is safe for concurrent use.
type TokenAuthority struct {
	td  spiffeid.TrustDomain
	now func() time.Time
	key *ecdsa.PrivateKey
	kid string
}

// LoadOrCreateTokenAuthority loads the token signing key under dataDir,
// creating it (0600) at first start.
func LoadOrCreateTokenAuthority(dataDir string, td spiffeid.TrustDomain, opts CAOptions) (*TokenAuthority, error) {
	path := filepath.Join(dataDir, tokenKeyFile)
	var key *ecdsa.PrivateKey
	signer, err := ReadKeyFile(path)
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
		pemKey, err := EncodeKeyPEM(key)
		if err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
		if err := WriteFileAtomic(path, pemKey, 0o600); err != nil {
			return nil, fmt.Errorf("create token key: %w", err)
		}
	default:
		return nil, fmt.Errorf("load token key: %w", err)
	}
	return NewTokenAuthority(key, td, opts), nil
}

// NewTokenAuthority wraps an existing signing key.
func NewTokenAuthority(key *ecdsa.PrivateKey, td spiffeid.TrustDomain, opts CAOptions) *TokenAuthority {
	pub, _ := key.PublicKey.ECDH()
	sum := sha256.Sum256(pub.Bytes())
	return &TokenAuthority{td: td, now: opts.now(), key: key, kid: hex.EncodeToString(sum[:8])}
}

// Issue signs a join token for spiffe://<td>/ns/<namespace>/sa/<serviceAccount>
// valid for ttl, with a random unique ID.
func (a *TokenAuthority) Issue(service, namespace, serviceAccount string, ttl time.Duration) (string, TokenClaims, error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", TokenClaims{}, fmt.Errorf("issue token: ttl %s out of range (0, %s]", ttl, MaxTokenTTL)
	}
	id, err := WorkloadID(a.td, namespace, serviceAccount)
	if err != nil {
		return "", TokenClaims{}, fmt.Errorf("issue token: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", TokenClaims{}, fmt.Errorf("issue token: %w", err)
	}
	now := a.now().Truncate(time.Second)
	c := jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   id.String(),
			Audience:  jwt.ClaimStrings{tokenAudience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now.Add(-MaxBackdate)),
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
		return "", TokenClaims{}, fmt.Errorf("issue token: %w", err)
	}
	return s, TokenClaims{ID: c.ID, SPIFFEID: id, Service: service, Namespace: namespace, ServiceAccount: serviceAccount, IssuedAt: now, ExpiresAt: now.Add(ttl)}, nil
}

// Verify checks a token's signature, issuer, audience and validity window and
// returns the identity it entitles. Revocation is the caller's check, by ID.
func (a *TokenAuthority) Verify(token string) (TokenClaims, error) {
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
			return TokenClaims{}, fmt.Errorf("%w: %v", ErrTokenExpired, err)
		}
		return TokenClaims{}, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	// iat is checked here, not with jwt.WithIssuedAt: that allows no skew,
	// defeating the MaxBackdate that nbf is backdated by.
	if c.IssuedAt == nil {
		return TokenClaims{}, fmt.Errorf("%w: no iat claim", ErrTokenInvalid)
	}
	if c.IssuedAt.After(a.now().Add(MaxBackdate)) {
		return TokenClaims{}, fmt.Errorf("%w: issued in the future, at %s", ErrTokenExpired, c.IssuedAt.Format(time.RFC3339))
	}
	id, ns, sa, err := ParseWorkloadID(c.Subject)
	if err != nil || id.TrustDomain() != a.td || ns != c.Namespace || sa != c.ServiceAccount || c.ID == "" || c.Service == "" {
		return TokenClaims{}, fmt.Errorf("%w: claims do not name one workload identity in trust domain %s", ErrTokenInvalid, a.td)
	}
	return TokenClaims{
		ID: c.ID, SPIFFEID: id, Service: c.Service, Namespace: ns, ServiceAccount: sa,
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time,
	}, nil
}
