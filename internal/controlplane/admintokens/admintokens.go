package admintokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/names"
)

// secretPrefix starts every admin token, so one is told apart from the
// bootstrap admin.token (hex) and from join tokens (JWTs) at a glance and
// by secret scanners. The token is secretPrefix NAME "." 64 hex digits.
const secretPrefix = "trellis-admin."

// DefaultTTL and MaxTTL bound a token's lifetime.
const (
	DefaultTTL = 30 * 24 * time.Hour
	MaxTTL     = 366 * 24 * time.Hour
)

// ErrUnauthenticated: the presented secret is no valid admin token
// (unknown, wrong, expired or revoked). The error's text says which, for
// logs and the 401 body; it never holds the secret.
var ErrUnauthenticated = errors.New("unauthenticated")

// FieldError is a bad request field.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return fmt.Sprintf("admin token: %s: %s", e.Field, e.Msg) }

// Service creates, lists, revokes and authenticates admin tokens. Safe
// for concurrent use.
type Service struct {
	rec Records
	now func() time.Time

	mu       sync.Mutex
	lastUsed map[string]time.Time // by name, this replica only
}

// New returns the service keeping its records in rec (StoreRecords for
// the control plane's store).
func New(rec Records, now func() time.Time) *Service {
	return &Service{rec: rec, now: now, lastUsed: map[string]time.Time{}}
}

// Create makes a token for req, on behalf of by, who must cover it (hold
// every permission of its role in all of its namespaces; else a
// *adminauth.ForbiddenError). A name in use by a valid token is a
// conflict; the name of a revoked or expired one is reused.
func (s *Service) Create(ctx context.Context, req adminapi.CreateAdminTokenRequest, by adminauth.Principal) (adminapi.CreateAdminTokenResponse, error) {
	role, err := adminauth.ParseRole(req.Role)
	if err != nil {
		return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "role", Msg: err.Error()}
	}
	var nss []string
	for _, ns := range req.Namespaces {
		for ns := range strings.SplitSeq(ns, ",") {
			ns = strings.TrimSpace(ns)
			if !names.IsDNSLabel(ns) {
				return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "namespaces", Msg: fmt.Sprintf("%q %s", ns, names.DNSLabelRule)}
			}
			if ns == adminauth.MeshNamespace {
				return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "namespaces", Msg: fmt.Sprintf("%s holds mesh-wide resources, so acting in it needs a token for all namespaces", ns)}
			}
			if !slices.Contains(nss, ns) {
				nss = append(nss, ns)
			}
		}
	}
	slices.Sort(nss)
	ttl := DefaultTTL
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "ttl", Msg: fmt.Sprintf("%q is not a duration; use e.g. 720h or 30m", req.TTL)}
		}
	}
	if ttl <= 0 || ttl > MaxTTL {
		return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "ttl", Msg: fmt.Sprintf("%s is out of range; use a duration between 1s and %s", ttl, MaxTTL)}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("admin token: %w", err)
	}
	name := req.Name
	if name == "" {
		name = string(role) + "-" + hex.EncodeToString(raw[:3])
		if _, err := rand.Read(raw[:]); err != nil {
			return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("admin token: %w", err)
		}
	}
	if !names.IsDNSLabel(name) || name == adminauth.RootName {
		return adminapi.CreateAdminTokenResponse{}, &FieldError{Field: "name", Msg: fmt.Sprintf("%q %s, and not %q", name, names.DNSLabelRule, adminauth.RootName)}
	}
	if err := by.Covers(adminauth.Principal{Name: name, Role: role, Namespaces: nss}); err != nil {
		return adminapi.CreateAdminTokenResponse{}, err
	}
	now := s.now().UTC().Truncate(time.Second)
	secret := secretPrefix + name + "." + hex.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(secret))
	rec := Record{
		AdminTokenInfo: adminapi.AdminTokenInfo{Name: name, Role: string(role), Namespaces: nss, CreatedBy: by.Name, CreatedAt: now, ExpiresAt: now.Add(ttl)},
		SHA256:         hex.EncodeToString(sum[:]),
	}
	// A record of the name that is revoked or expired is replaced at its
	// version; a conflict (created or changed meanwhile, by this replica
	// or another) reads the record again.
	for attempt := 0; ; attempt++ {
		old, version, err := s.get(ctx, name)
		switch {
		case err == nil:
			if old.RevokedAt == nil && now.Before(old.ExpiresAt) {
				return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("%w: admin token %q exists and is valid; revoke it first or choose another --name", adminapi.ErrConflict, name)
			}
			err = s.rec.Update(ctx, rec, version)
		case errors.Is(err, adminapi.ErrNotFound):
			err = s.rec.Create(ctx, rec)
		default:
			return adminapi.CreateAdminTokenResponse{}, err
		}
		if errors.Is(err, adminapi.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("record admin token %q: %w", name, err)
		}
		break
	}
	return adminapi.CreateAdminTokenResponse{Token: secret, Info: rec.AdminTokenInfo}, nil
}

func (s *Service) get(ctx context.Context, name string) (Record, string, error) {
	rec, version, err := s.rec.Get(ctx, name)
	if errors.Is(err, adminapi.ErrNotFound) {
		return Record{}, "", fmt.Errorf("%w (trellis admin-token list shows them)", err)
	}
	if err != nil {
		return Record{}, "", fmt.Errorf("read admin token %q: %w", name, err)
	}
	return rec, version, nil
}

// Get returns the info of the token name.
func (s *Service) Get(ctx context.Context, name string) (adminapi.AdminTokenInfo, error) {
	rec, _, err := s.get(ctx, name)
	return s.withLastUsed(rec.AdminTokenInfo), err
}

// List returns every token's info, ordered by name.
func (s *Service) List(ctx context.Context) ([]adminapi.AdminTokenInfo, error) {
	recs, err := s.rec.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	out := make([]adminapi.AdminTokenInfo, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.withLastUsed(rec.AdminTokenInfo))
	}
	return out, nil
}

func (s *Service) withLastUsed(info adminapi.AdminTokenInfo) adminapi.AdminTokenInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.lastUsed[info.Name]; ok && !t.Before(info.CreatedAt) {
		info.LastUsed = &t
	}
	return info
}

// Revoke marks the token name revoked; from then on it is refused.
// Revoking twice is not an error.
func (s *Service) Revoke(ctx context.Context, name string) (adminapi.AdminTokenInfo, error) {
	for attempt := 0; ; attempt++ {
		rec, version, err := s.get(ctx, name)
		if err != nil {
			return adminapi.AdminTokenInfo{}, err
		}
		if rec.RevokedAt != nil {
			return s.withLastUsed(rec.AdminTokenInfo), nil
		}
		now := s.now().UTC()
		rec.RevokedAt = &now
		err = s.rec.Update(ctx, rec, version)
		if errors.Is(err, adminapi.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return adminapi.AdminTokenInfo{}, fmt.Errorf("revoke admin token %q: %w", name, err)
		}
		return s.withLastUsed(rec.AdminTokenInfo), nil
	}
}

// Authenticate returns the principal of a presented secret, reading its
// record from its Records each time (no cache) so that a revocation or
// expiry holds at once on every replica sharing them. An error wraps
// ErrUnauthenticated unless reading the record failed.
func (s *Service) Authenticate(ctx context.Context, secret string) (adminauth.Principal, error) {
	rest, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return adminauth.Principal{}, ErrUnauthenticated
	}
	name, _, ok := strings.Cut(rest, ".")
	if !ok || !names.IsDNSLabel(name) {
		return adminauth.Principal{}, ErrUnauthenticated
	}
	rec, _, err := s.get(ctx, name)
	if errors.Is(err, adminapi.ErrNotFound) {
		return adminauth.Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return adminauth.Principal{}, err
	}
	want, err := hex.DecodeString(rec.SHA256)
	sum := sha256.Sum256([]byte(secret))
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return adminauth.Principal{}, ErrUnauthenticated
	}
	now := s.now()
	switch {
	case rec.RevokedAt != nil:
		return adminauth.Principal{}, fmt.Errorf("%w: admin token %q was revoked at %s", ErrUnauthenticated, name, rec.RevokedAt.Format(time.RFC3339))
	case !now.Before(rec.ExpiresAt):
		return adminauth.Principal{}, fmt.Errorf("%w: admin token %q expired at %s", ErrUnauthenticated, name, rec.ExpiresAt.Format(time.RFC3339))
	}
	s.mu.Lock()
	s.lastUsed[name] = now.UTC()
	s.mu.Unlock()
	return adminauth.Principal{Name: rec.Name, Role: adminauth.Role(rec.Role), Namespaces: rec.Namespaces}, nil
}
