// Package store defines the control plane's storage contract: a flat,
// ordered key space with a store-wide revision counter, atomic multi-key
// transactions with optimistic-concurrency conditions, and watches.
//
// Callers (the control plane's registry, resource service, token authority)
// depend only on the Store interface, so the embedded bbolt backend
// (package store/bolt) can be joined later by etcd and Kubernetes backends
// without touching them. Any package may import store; only main-side wiring
// imports a concrete backend.
package store

import (
	"context"
	"errors"
)

// Errors returned by every backend. Callers test them with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrConflict: a condition in a transaction did not hold; nothing was written.
	ErrConflict = errors.New("store: revision conflict")
	// ErrCompacted: a watch asked for history the backend no longer holds;
	// the caller must List again and watch from the list's revision.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrTooLarge: the backend refuses a transaction this large (etcd's
	// --max-txn-ops and --max-request-bytes); nothing was written.
	ErrTooLarge = errors.New("store: transaction too large")
	// ErrUnavailable: the backend cannot reach a quorum; retry later.
	ErrUnavailable = errors.New("store: unavailable")
)

// KV is one stored key. Values returned to callers are copies the caller owns.
type KV struct {
	Key   string
	Value []byte
	// CreateRevision is the store revision at which the key was created.
	CreateRevision int64
	// ModRevision is the store revision of the key's latest write.
	ModRevision int64
}

// OpType says what an Op does.
type OpType int

// Op types.
const (
	OpPut OpType = iota + 1
	OpDelete
)

// AnyRevision in Op.IfModRevision means "no condition".
const AnyRevision int64 = -1

// Op is one write in a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte // OpPut only
	// IfModRevision is a condition on the key's current ModRevision:
	// AnyRevision (-1) for none, 0 for "the key must not exist", or the
	// exact ModRevision the key must have. The transaction fails with
	// ErrConflict, writing nothing, if any condition does not hold.
	IfModRevision int64
}

// EventType says what happened to a key.
type EventType int

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one change seen by a watch. For EventDelete, KV holds the key,
// the deleted value and ModRevision equal to the deleting revision.
type Event struct {
	Type     EventType
	KV       KV
	Revision int64
}

// Store is the control plane's storage contract. All methods are safe for
// concurrent use. Revisions start at 1 with the first write and grow by one
// per successful transaction (every op in a transaction shares the revision).
type Store interface {
	// Get returns the key or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key with the prefix, in key order, and the store
	// revision the listing reflects (usable as a watch's fromRevision).
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Txn applies all ops atomically or none of them. It returns the new
	// revision, or ErrConflict if a condition failed. A transaction with no
	// effective writes (no ops, or only deletes of missing keys) consumes no
	// revision and returns the current one.
	Txn(ctx context.Context, ops ...Op) (int64, error)
	// Watch delivers, in revision order, every event on keys with the prefix
	// whose revision is greater than fromRevision. fromRevision 0 means
	// "from now". If fromRevision is older than the history the backend
	// keeps, Watch returns ErrCompacted. The channel is closed when ctx is
	// done, when the store closes, or when the watcher falls too far behind
	// (the caller then lists again and re-watches from the list revision).
	Watch(ctx context.Context, prefix string, fromRevision int64) (<-chan Event, error)
	// Revision returns the current store revision (0 for an empty store).
	Revision(ctx context.Context) (int64, error)
	// Close releases the store. Pending watches are closed.
	Close() error
}
