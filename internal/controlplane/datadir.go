package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/adminhttp"
	"github.com/trellismesh/trellis/internal/store"
)

// Files in the data dir.
const (
	AdminTokenFile = adminhttp.TokenFile
	// StoreFile is where the command line keeps the default (bolt) store
	// in the data dir.
	StoreFile      = "state.db"
	trustDomainKey = "/meta/trust-domain"
)

// PrepareDataDir creates the data dir 0700, or tightens an existing one.
// New does it too; a caller that keeps its store in the data dir calls it
// before opening the store.
func PrepareDataDir(dir string) error {
	if dir == "" {
		return errDataDirRequired
	}
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
