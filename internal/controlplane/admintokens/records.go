package admintokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/store"
)

// Prefix is where StoreRecords keeps the records in the store.
const Prefix = "/admin-tokens/"

// Record is what Records keep of a token: its info (LastUsed left out:
// it is per replica, in memory) and the SHA-256 of the secret in hex,
// never the secret.
type Record struct {
	adminapi.AdminTokenInfo
	SHA256 string `json:"sha256"`
}

// Records keeps admin tokens' records where every control-plane replica
// that should accept them sees them: the store (StoreRecords: one
// process, or etcd shared by replicas) or, in Kubernetes mode, Secrets in
// the control plane's namespace (internal/kube/admintokenrecords). Every
// call reads or writes the backing storage: an implementation must not
// cache, or a revoked token could pass. Records are not deleted; a
// revoked or expired token's record is replaced when its name is reused.
type Records interface {
	// Create records rec under rec.Name, or fails with an error wrapping
	// adminapi.ErrConflict if a record of that name exists (valid or not:
	// the Service replaces an invalid one with Update).
	Create(ctx context.Context, rec Record) error
	// Get returns the record of name and its version, an opaque string
	// for Update, or an error wrapping adminapi.ErrNotFound.
	Get(ctx context.Context, name string) (Record, string, error)
	// Update replaces the record of rec.Name if it is still at version,
	// else fails with an error wrapping adminapi.ErrConflict (changed
	// meanwhile) or adminapi.ErrNotFound (gone).
	Update(ctx context.Context, rec Record, version string) error
	// List returns every record, ordered by name.
	List(ctx context.Context) ([]Record, error)
}

// StoreRecords keeps the records in st under Prefix + name, as JSON.
func StoreRecords(st store.Store) Records { return storeRecords{st} }

type storeRecords struct{ st store.Store }

func (r storeRecords) Create(ctx context.Context, rec Record) error {
	return r.put(ctx, rec, 0)
}

func (r storeRecords) Get(ctx context.Context, name string) (Record, string, error) {
	kv, err := r.st.Get(ctx, Prefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, "", fmt.Errorf("%w: admin token %q", adminapi.ErrNotFound, name)
	}
	if err != nil {
		return Record{}, "", err
	}
	var rec Record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return Record{}, "", fmt.Errorf("decode admin token %q: %w", name, err)
	}
	return rec, strconv.FormatInt(kv.ModRevision, 10), nil
}

func (r storeRecords) Update(ctx context.Context, rec Record, version string) error {
	rev, err := strconv.ParseInt(version, 10, 64)
	if err != nil || rev <= 0 {
		return fmt.Errorf("update admin token %q: bad version %q", rec.Name, version)
	}
	return r.put(ctx, rec, rev)
}

// put writes rec if its key is at revision rev (0: absent).
func (r storeRecords) put(ctx context.Context, rec Record, rev int64) error {
	rec.LastUsed = nil
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = r.st.Txn(ctx, store.Op{Type: store.OpPut, Key: Prefix + rec.Name, Value: val, IfModRevision: rev})
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: admin token %q was created or changed meanwhile: %w", adminapi.ErrConflict, rec.Name, err)
	}
	return err
}

func (r storeRecords) List(ctx context.Context) ([]Record, error) {
	kvs, _, err := r.st.List(ctx, Prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(kvs))
	for _, kv := range kvs {
		var rec Record
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, rec)
	}
	return out, nil
}
