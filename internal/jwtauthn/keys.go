package jwtauthn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Key refresh timing.
const (
	// RefreshEvery is how often a remote JWKS is fetched again.
	RefreshEvery = 10 * time.Minute
	// MinRefetch spaces the fetches an unknown key id causes.
	MinRefetch = 30 * time.Second
	// maxBackoff caps the wait after failed fetches.
	maxBackoff = 5 * time.Minute
	// maxJWKS bounds a JWKS document.
	maxJWKS = 1 << 20
	// fetchTimeout bounds one fetch.
	fetchTimeout = 5 * time.Second
)

// keySource gives the key for a key id.
type keySource interface {
	key(ctx context.Context, kid string, now time.Time) (*jose.JSONWebKey, error)
}

// staticKeys is an inline JWKS.
type staticKeys struct{ set jose.JSONWebKeySet }

func parseJWKS(data []byte) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return set, fmt.Errorf("not a JWKS (a JSON object with \"keys\"): %w", err)
	}
	for i, k := range set.Keys {
		if _, symmetric := k.Key.([]byte); symmetric {
			return set, fmt.Errorf("key %d (kid %q) is not a public key: a JWKS for verification holds public keys only (no HMAC secrets, no private keys)", i, k.KeyID)
		}
		if !k.Valid() {
			return set, fmt.Errorf("key %d (kid %q) is not valid", i, k.KeyID)
		}
		if !k.IsPublic() {
			return set, fmt.Errorf("key %d (kid %q) is not a public key: a JWKS for verification holds public keys only (no HMAC secrets, no private keys)", i, k.KeyID)
		}
	}
	return set, nil
}

func (s *staticKeys) key(_ context.Context, kid string, _ time.Time) (*jose.JSONWebKey, error) {
	return pick(&s.set, kid)
}

// pick finds kid in set; without a kid, the set's only key.
func pick(set *jose.JSONWebKeySet, kid string) (*jose.JSONWebKey, error) {
	if kid == "" {
		if len(set.Keys) == 1 {
			return &set.Keys[0], nil
		}
		return nil, fmt.Errorf("%w: the token names no key id (kid) and the issuer has %d keys", ErrUnknownKey, len(set.Keys))
	}
	if ks := set.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, fmt.Errorf("%w: no key %q", ErrUnknownKey, kid)
}

// remoteKeys is a JWKS fetched over HTTPS.
type remoteKeys struct {
	uri    string
	client *http.Client

	mu          sync.Mutex
	set         *jose.JSONWebKeySet
	next        time.Time // the next scheduled fetch
	lastUnknown time.Time // the last fetch an unknown kid caused
	failures    int
	lastErr     error
}

func (r *remoteKeys) key(ctx context.Context, kid string, now time.Time) (*jose.JSONWebKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil || !now.Before(r.next) {
		r.fetchLocked(ctx, now)
	}
	if r.set == nil {
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, r.lastErr)
	}
	k, err := pick(r.set, kid)
	if errors.Is(err, ErrUnknownKey) && kid != "" && now.Sub(r.lastUnknown) >= MinRefetch {
		// A rotated key: fetch again, at most once per MinRefetch.
		r.lastUnknown = now
		r.fetchLocked(ctx, now)
		k, err = pick(r.set, kid)
	}
	return k, err
}

// fetchLocked fetches the JWKS; on failure it keeps the last good set and
// backs off.
func (r *remoteKeys) fetchLocked(ctx context.Context, now time.Time) {
	set, err := r.fetch(ctx)
	if err != nil {
		r.failures++
		r.lastErr = err
		r.next = now.Add(min(maxBackoff, time.Second<<min(r.failures-1, 10)))
		return
	}
	r.set, r.failures, r.lastErr = &set, 0, nil
	r.next = now.Add(RefreshEvery)
}

func (r *remoteKeys) fetch(ctx context.Context) (jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.uri, nil)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetch JWKS %s: %w", r.uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetch JWKS %s: %s", r.uri, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetch JWKS %s: %w", r.uri, err)
	}
	if len(data) > maxJWKS {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetch JWKS %s: over %d bytes", r.uri, maxJWKS)
	}
	set, err := parseJWKS(data)
	if err != nil {
		return set, fmt.Errorf("fetch JWKS %s: %w", r.uri, err)
	}
	return set, nil
}
