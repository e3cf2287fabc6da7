package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/store"
)

const tokenPrefix = "/tokens/"

// DefaultTTL is a join token's lifetime when none is asked for.
const DefaultTTL = 24 * time.Hour

// Typed errors; the control plane's edges map them to statuses.
var (
	errNotFound = adminapi.ErrNotFound
	errConflict = adminapi.ErrConflict
)

// Service issues join tokens and records each one (never the token
// itself) in its Records, so it can be listed and revoked. Safe for
// concurrent use.
type Service struct {
	rec  Records
	auth *jointoken.Authority
	now  func() time.Time
	// serviceAccounts: workloads may also join with ServiceAccount tokens
	// (Config.ServiceAccounts), so an identity never given a join token is
	// entitled by its certificate, which renews only while its
	// ServiceAccount and pod live.
	serviceAccounts bool
}

// Config is what a Service works from.
type Config struct {
	// Authority signs and verifies the tokens. Required.
	Authority *jointoken.Authority
	// Records keeps the tokens' records; nil means Store's, under
	// /tokens/<id> (hosts mode, one store per control plane).
	Records Records
	// Store holds the records when Records is nil.
	Store store.Store
	// Now is the clock that times revocations.
	Now func() time.Time
	// ServiceAccounts: workloads may also join with ServiceAccount tokens
	// (controlplane.Config.WorkloadTokens), so an identity never given a
	// join token is entitled by its certificate alone.
	ServiceAccounts bool
}

// New returns the join-token service of cfg.
func New(cfg Config) *Service {
	rec := cfg.Records
	if rec == nil {
		rec = storeRecords{cfg.Store}
	}
	return &Service{rec: rec, auth: cfg.Authority, now: cfg.Now, serviceAccounts: cfg.ServiceAccounts}
}

// Create issues a token for req (defaults filled in: namespace default, the
// service as ServiceAccount, DefaultTTL) and records it. A bad field is a
// *FieldError.
func (t *Service) Create(ctx context.Context, req adminapi.CreateTokenRequest) (adminapi.CreateTokenResponse, error) {
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.ServiceAccount == "" {
		req.ServiceAccount = req.Service
	}
	ttl := DefaultTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return adminapi.CreateTokenResponse{}, &FieldError{Field: "ttl", Msg: fmt.Sprintf("%q is not a duration; use e.g. 24h or 30m", req.TTL)}
		}
		ttl = d
	}
	if ttl <= 0 || ttl > jointoken.MaxTTL {
		return adminapi.CreateTokenResponse{}, &FieldError{Field: "ttl", Msg: fmt.Sprintf("%s is out of range; use a duration between 1s and %s", ttl, jointoken.MaxTTL)}
	}
	if req.Namespace == identity.ControlPlaneNamespace && req.ServiceAccount == "control" {
		return adminapi.CreateTokenResponse{}, &FieldError{Field: "serviceAccount", Msg: "trellis-system/control is the control plane's own identity; no workload may hold it"}
	}
	for _, f := range []struct{ field, val string }{{"service", req.Service}, {"namespace", req.Namespace}, {"serviceAccount", req.ServiceAccount}} {
		if !names.IsDNSLabel(f.val) {
			return adminapi.CreateTokenResponse{}, &FieldError{Field: f.field, Msg: fmt.Sprintf("%q %s", f.val, names.DNSLabelRule)}
		}
	}
	tok, claims, err := t.auth.Issue(req.Service, req.Namespace, req.ServiceAccount, ttl)
	if err != nil {
		return adminapi.CreateTokenResponse{}, err
	}
	info := adminapi.TokenInfo{
		ID: claims.ID, SPIFFEID: claims.SPIFFEID.String(), Service: claims.Service, Namespace: claims.Namespace,
		ServiceAccount: claims.ServiceAccount, IssuedAt: claims.IssuedAt.UTC(), ExpiresAt: claims.ExpiresAt.UTC(),
	}
	if err := t.rec.Create(ctx, info); err != nil {
		return adminapi.CreateTokenResponse{}, fmt.Errorf("record token: %w", err)
	}
	return adminapi.CreateTokenResponse{Token: tok, Info: info}, nil
}

// Info returns the record of token id (never the token).
func (t *Service) Info(ctx context.Context, id string) (adminapi.TokenInfo, error) {
	info, _, err := t.rec.Get(ctx, id)
	return info, err
}

func (t *Service) info(ctx context.Context, id string) (adminapi.TokenInfo, string, error) {
	return t.rec.Get(ctx, id)
}

// Revoke marks a token revoked. Revoking twice is not an error.
func (t *Service) Revoke(ctx context.Context, id string) (adminapi.TokenInfo, error) {
	for attempt := 0; ; attempt++ {
		info, rev, err := t.info(ctx, id)
		if err != nil {
			return adminapi.TokenInfo{}, err
		}
		if info.RevokedAt != nil {
			return info, nil
		}
		now := t.now().UTC().Truncate(time.Second)
		info.RevokedAt = &now
		err = t.rec.Update(ctx, info, rev)
		if errors.Is(err, errConflict) && attempt < 4 {
			continue
		}
		if err != nil {
			return adminapi.TokenInfo{}, fmt.Errorf("revoke token: %w", err)
		}
		return info, nil
	}
}

// List returns every token's record, ordered by ID.
func (t *Service) List(ctx context.Context) ([]adminapi.TokenInfo, error) {
	out, err := t.rec.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// forIdentity returns the records of the tokens issued for spiffeID.
func (t *Service) forIdentity(ctx context.Context, spiffeID string) ([]adminapi.TokenInfo, error) {
	out, err := t.rec.ForIdentity(ctx, spiffeID)
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", spiffeID, err)
	}
	return out, nil
}

// ErrRevoked: the token was revoked, or was never recorded here.
var ErrRevoked = errors.New("join token revoked")

// Verify checks a join token fully: signature and validity window, then
// that it is recorded and not revoked.
func (t *Service) Verify(ctx context.Context, token string) (jointoken.Claims, error) {
	claims, err := t.auth.Verify(token)
	if err != nil {
		return jointoken.Claims{}, err
	}
	info, _, err := t.info(ctx, claims.ID)
	if errors.Is(err, errNotFound) {
		return jointoken.Claims{}, fmt.Errorf("%w: token %s is not known to this control plane", ErrRevoked, claims.ID)
	}
	if err != nil {
		return jointoken.Claims{}, err
	}
	if info.RevokedAt != nil {
		return jointoken.Claims{}, fmt.Errorf("%w: token %s was revoked at %s", ErrRevoked, claims.ID, info.RevokedAt.Format(time.RFC3339))
	}
	return claims, nil
}

// FieldError is a bad field in an API request body.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// AnyIssued reports whether a join token was ever issued for spiffeID,
// revoked or not.
func (t *Service) AnyIssued(ctx context.Context, spiffeID string) (bool, error) {
	infos, err := t.forIdentity(ctx, spiffeID)
	if err != nil {
		return false, err
	}
	return len(infos) > 0, nil
}

// Entitled reports (nil) whether some join token that was not revoked named
// spiffeID with service: the binding of a service name to an identity, which
// the certificate alone does not carry.
func (t *Service) Entitled(ctx context.Context, spiffeID, service string) error {
	infos, err := t.forIdentity(ctx, spiffeID)
	if err != nil {
		return err
	}
	named, issued := false, false
	for _, info := range infos {
		if info.SPIFFEID != spiffeID {
			continue
		}
		issued = true
		if info.RevokedAt != nil {
			continue
		}
		if service == "" || info.Service == service {
			return nil
		}
		named = true
	}
	if named {
		return fmt.Errorf("%s was not issued a join token for service %q; create one with `trellis token create --service %s`", spiffeID, service, service)
	}
	if !issued && t.serviceAccounts {
		return nil
	}
	return fmt.Errorf("%w: every join token for %s is revoked (or none was issued); create a new one with `trellis token create`", ErrRevoked, spiffeID)
}
