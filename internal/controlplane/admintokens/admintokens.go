package admintokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/store"
)

// Prefix is where the records live in the store.
const Prefix = "/admin-tokens/"

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

// record is what the store keeps: the info and the secret's SHA-256.
type record struct {
	adminapi.AdminTokenInfo
	SHA256 string `json:"sha256"`
}

// Service creates, lists, revokes and authenticates admin tokens. Safe
// for concurrent use.
type Service struct {
	st  store.Store
	now func() time.Time

	mu       sync.Mutex
	lastUsed map[string]time.Time // by name, this replica only
}

// New returns the service keeping its records in st.
func New(st store.Store, now func() time.Time) *Service {
	return &Service{st: st, now: now, lastUsed: map[string]time.Time{}}
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
	rec := record{
		AdminTokenInfo: adminapi.AdminTokenInfo{Name: name, Role: string(role), Namespaces: nss, CreatedBy: by.Name, CreatedAt: now, ExpiresAt: now.Add(ttl)},
		SHA256:         hex.EncodeToString(sum[:]),
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return adminapi.CreateAdminTokenResponse{}, err
	}
	cond := int64(0)
	if old, rev, err := s.get(ctx, name); err == nil {
		if old.RevokedAt == nil && now.Before(old.ExpiresAt) {
			return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("%w: admin token %q exists and is valid; revoke it first or choose another --name", adminapi.ErrConflict, name)
		}
		cond = rev
	} else if !errors.Is(err, adminapi.ErrNotFound) {
		return adminapi.CreateAdminTokenResponse{}, err
	}
	if _, err := s.st.Txn(ctx, store.Op{Type: store.OpPut, Key: Prefix + name, Value: val, IfModRevision: cond}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("%w: admin token %q was created or changed meanwhile: %w", adminapi.ErrConflict, name, err)
		}
		return adminapi.CreateAdminTokenResponse{}, fmt.Errorf("record admin token %q: %w", name, err)
	}
	return adminapi.CreateAdminTokenResponse{Token: secret, Info: rec.AdminTokenInfo}, nil
}

func (s *Service) get(ctx context.Context, name string) (record, int64, error) {
	kv, err := s.st.Get(ctx, Prefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return record{}, 0, fmt.Errorf("%w: admin token %q (trellis admin-token list shows them)", adminapi.ErrNotFound, name)
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("read admin token %q: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return record{}, 0, fmt.Errorf("decode admin token %q: %w", name, err)
	}
	return rec, kv.ModRevision, nil
}

// Get returns the info of the token name.
func (s *Service) Get(ctx context.Context, name string) (adminapi.AdminTokenInfo, error) {
	rec, _, err := s.get(ctx, name)
	return s.withLastUsed(rec.AdminTokenInfo), err
}

// List returns every token's info, ordered by name.
func (s *Service) List(ctx context.Context) ([]adminapi.AdminTokenInfo, error) {
	kvs, _, err := s.st.List(ctx, Prefix)
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	out := make([]adminapi.AdminTokenInfo, 0, len(kvs))
	for _, kv := range kvs {
		var rec record
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
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
		rec, rev, err := s.get(ctx, name)
		if err != nil {
			return adminapi.AdminTokenInfo{}, err
		}
		if rec.RevokedAt != nil {
			return s.withLastUsed(rec.AdminTokenInfo), nil
		}
		now := s.now().UTC()
		rec.RevokedAt = &now
		val, err := json.Marshal(rec)
		if err != nil {
			return adminapi.AdminTokenInfo{}, err
		}
		_, err = s.st.Txn(ctx, store.Op{Type: store.OpPut, Key: Prefix + name, Value: val, IfModRevision: rev})
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return adminapi.AdminTokenInfo{}, fmt.Errorf("revoke admin token %q: %w", name, err)
		}
		return s.withLastUsed(rec.AdminTokenInfo), nil
	}
}

// Authenticate returns the principal of a presented secret, reading its
// record from the store each time so that a revocation or expiry holds at
// once on every replica. An error wraps ErrUnauthenticated unless the
// store failed.
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
