package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/store"
)

// Records keeps join tokens' records (never the tokens) where every
// control-plane replica sees them (Kubernetes mode: ConfigMaps,
// internal/kube/tokenrecords). A record is written once when its token is
// issued and changed only to mark it revoked; records are never deleted,
// since a workload's certificate renews only while some token for its
// identity is recorded and not revoked.
type Records interface {
	// Create records info under info.ID, or fails with an error wrapping
	// adminapi.ErrConflict if a record with that ID exists.
	Create(ctx context.Context, info adminapi.TokenInfo) error
	// Get returns the record of token id and its version, an opaque
	// string for Update, or an error wrapping adminapi.ErrNotFound.
	Get(ctx context.Context, id string) (adminapi.TokenInfo, string, error)
	// Update replaces the record of token info.ID if it is still at
	// version, else fails with an error wrapping adminapi.ErrConflict
	// (changed meanwhile) or adminapi.ErrNotFound (gone).
	Update(ctx context.Context, info adminapi.TokenInfo, version string) error
	// List returns every record, ordered by ID.
	List(ctx context.Context) ([]adminapi.TokenInfo, error)
	// ForIdentity returns the records of the tokens issued for spiffeID,
	// revoked or not, ordered by ID.
	ForIdentity(ctx context.Context, spiffeID string) ([]adminapi.TokenInfo, error)
}

// storeRecords keeps the records in the control plane's store under
// /tokens/<id>, with an index /token-ids/<escaped SPIFFE ID>/<id> so that
// a stream's Hello reads its identity's records and not every one
// (a store from before the index gets it built once, on first use).
type storeRecords struct{ st store.Store }

var _ Records = storeRecords{}

func (r storeRecords) Create(ctx context.Context, info adminapi.TokenInfo) error {
	val, err := json.Marshal(info)
	if err != nil {
		return err
	}
	_, err = r.st.Txn(ctx, store.Op{Type: store.OpPut, Key: tokenPrefix + info.ID, Value: val, IfModRevision: 0},
		store.Op{Type: store.OpPut, Key: indexKey(info.SPIFFEID, info.ID), Value: []byte{}, IfModRevision: store.AnyRevision})
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: token %q is already recorded: %w", errConflict, info.ID, err)
	}
	return err
}

// The identity index of token records.
const (
	indexPrefix = "/token-ids/"
	indexBuilt  = "/token-ids-built"
)

func indexKey(spiffeID, id string) string {
	return indexPrefix + url.PathEscape(spiffeID) + "/" + id
}

func (r storeRecords) Get(ctx context.Context, id string) (adminapi.TokenInfo, string, error) {
	kv, err := r.st.Get(ctx, tokenPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		return adminapi.TokenInfo{}, "", fmt.Errorf("%w: token %q", errNotFound, id)
	}
	if err != nil {
		return adminapi.TokenInfo{}, "", fmt.Errorf("read token %q: %w", id, err)
	}
	var info adminapi.TokenInfo
	if err := json.Unmarshal(kv.Value, &info); err != nil {
		return adminapi.TokenInfo{}, "", fmt.Errorf("decode token %q: %w", id, err)
	}
	return info, strconv.FormatInt(kv.ModRevision, 10), nil
}

func (r storeRecords) Update(ctx context.Context, info adminapi.TokenInfo, version string) error {
	rev, err := strconv.ParseInt(version, 10, 64)
	if err != nil || rev <= 0 {
		return fmt.Errorf("update token %q: bad version %q", info.ID, version)
	}
	val, err := json.Marshal(info)
	if err != nil {
		return err
	}
	_, err = r.st.Txn(ctx, store.Op{Type: store.OpPut, Key: tokenPrefix + info.ID, Value: val, IfModRevision: rev})
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: token %q changed or is gone: %w", errConflict, info.ID, err)
	}
	return err
}

func (r storeRecords) List(ctx context.Context) ([]adminapi.TokenInfo, error) {
	kvs, _, err := r.st.List(ctx, tokenPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]adminapi.TokenInfo, 0, len(kvs))
	for _, kv := range kvs {
		var info adminapi.TokenInfo
		if err := json.Unmarshal(kv.Value, &info); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, info)
	}
	return out, nil
}

func (r storeRecords) ForIdentity(ctx context.Context, spiffeID string) ([]adminapi.TokenInfo, error) {
	if err := r.buildIndex(ctx); err != nil {
		return nil, err
	}
	kvs, _, err := r.st.List(ctx, indexPrefix+url.PathEscape(spiffeID)+"/")
	if err != nil {
		return nil, err
	}
	var out []adminapi.TokenInfo
	for _, kv := range kvs {
		id := kv.Key[strings.LastIndexByte(kv.Key, '/')+1:]
		info, _, err := r.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if info.SPIFFEID == spiffeID {
			out = append(out, info)
		}
	}
	return out, nil
}

// buildIndex indexes the records of a store written before the index
// existed, once (the marker says it was done).
func (r storeRecords) buildIndex(ctx context.Context) error {
	if _, err := r.st.Get(ctx, indexBuilt); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	all, err := r.List(ctx)
	if err != nil {
		return err
	}
	ops := make([]store.Op, 0, 100)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := r.st.Txn(ctx, ops...)
		ops = ops[:0]
		return err
	}
	for _, info := range all {
		ops = append(ops, store.Op{Type: store.OpPut, Key: indexKey(info.SPIFFEID, info.ID), Value: []byte{}, IfModRevision: store.AnyRevision})
		if len(ops) == cap(ops) {
			if err := flush(); err != nil {
				return fmt.Errorf("index token records: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("index token records: %w", err)
	}
	_, err = r.st.Txn(ctx, store.Op{Type: store.OpPut, Key: indexBuilt, Value: []byte("1"), IfModRevision: store.AnyRevision})
	return err
}
