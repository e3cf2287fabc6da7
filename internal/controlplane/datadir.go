package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/store"
)

// Files in the data dir.
const (
	AdminTokenFile = "admin.token"
	storeFile      = "state.db"
	trustDomainKey = "/meta/trust-domain"
)

// prepareDataDir creates the data dir 0700, or tightens an existing one.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s: not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data dir %s: set mode 0700: %w", dir, err)
		}
	}
	return nil
}

// fixTrustDomain returns the data dir's trust domain, storing want at first
// start. A later start with a different explicit value is refused.
func fixTrustDomain(ctx context.Context, st store.Store, dataDir, want string) (spiffeid.TrustDomain, error) {
	kv, err := st.Get(ctx, trustDomainKey)
	switch {
	case err == nil:
		stored := string(kv.Value)
		if want != "" && want != stored {
			return spiffeid.TrustDomain{}, fmt.Errorf("--trust-domain %q differs from %q, fixed when %s was first started; "+
				"identities already issued name %q, so start with --trust-domain %s (or omit it), or use a new --data-dir", want, stored, dataDir, stored, stored)
		}
		return spiffeid.TrustDomainFromString(stored)
	case errors.Is(err, store.ErrNotFound):
		if want == "" {
			want = DefaultTrustDomain
		}
		td, err := spiffeid.TrustDomainFromString(want)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("--trust-domain %q: %w", want, err)
		}
		if _, err := st.Txn(ctx, store.Op{Type: store.OpPut, Key: trustDomainKey, Value: []byte(td.Name()), IfModRevision: 0}); err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("store trust domain: %w", err)
		}
		return td, nil
	default:
		return spiffeid.TrustDomain{}, fmt.Errorf("read trust domain: %w", err)
	}
}

// adminToken holds the SHA-256 of the admin bearer token, so comparison is
// constant-time regardless of the presented token's length.
type adminToken struct{ sum [32]byte }

func (t adminToken) matches(presented string) bool {
	s := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(s[:], t.sum[:]) == 1
}

// loadOrCreateAdminToken reads DIR/admin.token, creating it at first start
// with 256 random bits (hex), mode 0600.
func loadOrCreateAdminToken(dir string) (adminToken, error) {
	path := filepath.Join(dir, AdminTokenFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(data))
		if len(tok) < 32 {
			return adminToken{}, fmt.Errorf("admin token %s: too short (%d characters); delete it to have a new one generated", path, len(tok))
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return adminToken{}, fmt.Errorf("admin token %s: %w", path, err)
		}
		return adminToken{sum: sha256.Sum256([]byte(tok))}, nil
	case errors.Is(err, os.ErrNotExist):
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return adminToken{}, fmt.Errorf("admin token: %w", err)
		}
		tok := hex.EncodeToString(raw[:])
		if err := identity.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
			return adminToken{}, fmt.Errorf("admin token: %w", err)
		}
		return adminToken{sum: sha256.Sum256([]byte(tok))}, nil
	default:
		return adminToken{}, fmt.Errorf("admin token: %w", err)
	}
}
