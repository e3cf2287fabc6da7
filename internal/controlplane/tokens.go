package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/jointoken"
	"github.com/trellismesh/trellis/internal/names"
)

const tokenPrefix = "/tokens/"

// DefaultTokenTTL is a join token's lifetime when none is asked for.
const DefaultTokenTTL = 24 * time.Hour

// tokens issues join tokens and records each one (never the token itself)
// in rec (by default the store, under /tokens/<id>), so it can be listed
// and revoked.
type tokens struct {
	rec  TokenRecords
	auth *jointoken.Authority
	now  func() time.Time
	// serviceAccounts: workloads may also join with ServiceAccount tokens
	// (Config.WorkloadTokens), so an identity never given a join token is
	// entitled by its certificate, which renews only while its
	// ServiceAccount and pod live.
	serviceAccounts bool
}

func (t *tokens) create(ctx context.Context, req adminapi.CreateTokenRequest) (adminapi.CreateTokenResponse, error) {
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.ServiceAccount == "" {
		req.ServiceAccount = req.Service
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return adminapi.CreateTokenResponse{}, &fieldError{field: "ttl", msg: fmt.Sprintf("%q is not a duration; use e.g. 24h or 30m", req.TTL)}
		}
		ttl = d
	}
	if ttl <= 0 || ttl > jointoken.MaxTTL {
		return adminapi.CreateTokenResponse{}, &fieldError{field: "ttl", msg: fmt.Sprintf("%s is out of range; use a duration between 1s and %s", ttl, jointoken.MaxTTL)}
	}
	if req.Namespace == identity.ControlPlaneNamespace && req.ServiceAccount == "control" {
		return adminapi.CreateTokenResponse{}, &fieldError{field: "serviceAccount", msg: "trellis-system/control is the control plane's own identity; no workload may hold it"}
	}
	for _, f := range []struct{ field, val string }{{"service", req.Service}, {"namespace", req.Namespace}, {"serviceAccount", req.ServiceAccount}} {
		if !names.IsDNSLabel(f.val) {
			return adminapi.CreateTokenResponse{}, &fieldError{field: f.field, msg: fmt.Sprintf("%q %s", f.val, names.DNSLabelRule)}
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

func (t *tokens) info(ctx context.Context, id string) (adminapi.TokenInfo, string, error) {
	return t.rec.Get(ctx, id)
}

// revoke marks a token revoked. Revoking twice is not an error.
func (t *tokens) revoke(ctx context.Context, id string) (adminapi.TokenInfo, error) {
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

func (t *tokens) list(ctx context.Context) ([]adminapi.TokenInfo, error) {
	out, err := t.rec.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// forIdentity returns the records of the tokens issued for spiffeID.
func (t *tokens) forIdentity(ctx context.Context, spiffeID string) ([]adminapi.TokenInfo, error) {
	out, err := t.rec.ForIdentity(ctx, spiffeID)
	if err != nil {
		return nil, fmt.Errorf("list tokens of %s: %w", spiffeID, err)
	}
	return out, nil
}

// errTokenRevoked: the token was revoked, or was never recorded here.
var errTokenRevoked = errors.New("join token revoked")

// verify checks a join token fully: signature and validity window, then
// that it is recorded and not revoked.
func (t *tokens) verify(ctx context.Context, token string) (jointoken.Claims, error) {
	claims, err := t.auth.Verify(token)
	if err != nil {
		return jointoken.Claims{}, err
	}
	info, _, err := t.info(ctx, claims.ID)
	if errors.Is(err, errNotFound) {
		return jointoken.Claims{}, fmt.Errorf("%w: token %s is not known to this control plane", errTokenRevoked, claims.ID)
	}
	if err != nil {
		return jointoken.Claims{}, err
	}
	if info.RevokedAt != nil {
		return jointoken.Claims{}, fmt.Errorf("%w: token %s was revoked at %s", errTokenRevoked, claims.ID, info.RevokedAt.Format(time.RFC3339))
	}
	return claims, nil
}

// fieldError is a bad field in an API request body.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// anyIssued reports whether a join token was ever issued for spiffeID,
// revoked or not.
func (t *tokens) anyIssued(ctx context.Context, spiffeID string) (bool, error) {
	infos, err := t.forIdentity(ctx, spiffeID)
	if err != nil {
		return false, err
	}
	return len(infos) > 0, nil
}

// entitled reports (nil) whether some join token that was not revoked named
// spiffeID with service: the binding of a service name to an identity, which
// the certificate alone does not carry.
func (t *tokens) entitled(ctx context.Context, spiffeID, service string) error {
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
	return fmt.Errorf("%w: every join token for %s is revoked (or none was issued); create a new one with `trellis token create`", errTokenRevoked, spiffeID)
}
