package resstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
)

const resourcePrefix = "/resources/"

// Typed resource errors; the HTTP edge maps them to statuses.
var (
	errNotFound  = adminapi.ErrNotFound
	errConflict  = adminapi.ErrConflict
	errForbidden = adminapi.ErrForbidden
)

// ErrExternal refuses admin API writes when resources come from a source
// that does not take them (the admin API answers 409).
var ErrExternal = errors.New("this control plane reads its resources from a source that takes no writes: apply, edit and delete them there")

// Resources stores user resources (Mesh, AuthorizationPolicy, ...) as
// canonical JSON under /resources/<plural>/[<namespace>/]<name>. The stored
// value never holds resourceVersion: it is the key's ModRevision, filled in
// on read. Safe for concurrent use once UseExternal, if called, has
// returned.
type Resources struct {
	st  store.Store
	now func() time.Time
	// external, when set, holds the resources instead of st
	// (UseExternal): reads come from its cache; writes go to src when it
	// is a Writer, else they are refused.
	external *Cache
	src      Source
}

// New returns the resources kept in st, timestamped with now.
func New(st store.Store, now func() time.Time) *Resources {
	return &Resources{st: st, now: now}
}

// UseExternal makes src hold the resources instead of the store
// (controlplane.Config.Resources): the Mesh is read from c, which follows
// src; lists and gets read src's accepted objects; writes go to src when
// it is a Writer, else they fail with ErrExternal. Call it before the
// first use.
func (r *Resources) UseExternal(c *Cache, src Source) {
	r.external, r.src = c, src
}

// Writer is a Source that also takes the admin API's writes (Kubernetes
// mode: the custom resources). Objects come validated. Errors wrap
// adminapi.ErrNotFound, ErrConflict or ErrForbidden, or are an
// *adminapi.ObjectError; a write is seen by the source's Accepted before
// it returns.
type Writer interface {
	Apply(ctx context.Context, objs []resource.Object, dryRun bool) ([]adminapi.ApplyResult, error)
	Delete(ctx context.Context, kind resource.KindInfo, namespace, name string) error
}

// Source gives the mesh's resources from outside the store: the accepted
// version of each object, a generation, and a signal after each change (a
// burst may be one signal).
type Source interface {
	Accepted() ([]resource.Object, uint64)
	Changed() <-chan struct{}
}

func resourceKey(kind resource.KindInfo, namespace, name string) string {
	if kind.Namespaced {
		return resourcePrefix + kind.Plural + "/" + namespace + "/" + name
	}
	return resourcePrefix + kind.Plural + "/" + name
}

func decodeStored(kv store.KV) (resource.Object, error) {
	var o resource.Object
	if err := json.Unmarshal(kv.Value, &o); err != nil {
		return resource.Object{}, fmt.Errorf("decode stored %s: %w", kv.Key, err)
	}
	o.Metadata.ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
	return o, nil
}

// EnsureDefaultMesh creates the default Mesh if none exists.
func (r *Resources) EnsureDefaultMesh(ctx context.Context) error {
	m := resource.DefaultMesh()
	kind, _ := resource.LookupKind(m.Kind)
	key := resourceKey(kind, "", m.Metadata.Name)
	if _, err := r.st.Get(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("ensure default mesh: %w", err)
	}
	now := r.now().UTC().Truncate(time.Second)
	m.Metadata.UID = newUID()
	m.Metadata.Generation = 1
	m.Metadata.CreationTimestamp = &now
	m.Metadata.UpdateTimestamp = &now
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("ensure default mesh: %w", err)
	}
	_, err = r.st.Txn(ctx, store.Op{Type: store.OpPut, Key: key, Value: val, IfModRevision: 0})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("ensure default mesh: %w", err)
	}
	return nil
}

// Mesh returns the current Mesh spec.
func (r *Resources) Mesh(ctx context.Context) (resource.MeshSpec, error) {
	if r.external != nil {
		return r.external.meshSpec(), nil
	}
	kind, _ := resource.LookupKind("Mesh")
	kv, err := r.st.Get(ctx, resourceKey(kind, "", "default"))
	if err != nil {
		return resource.MeshSpec{}, fmt.Errorf("read mesh: %w", err)
	}
	o, err := decodeStored(kv)
	if err != nil {
		return resource.MeshSpec{}, err
	}
	return resource.MeshSpecOf(&o)
}

// Apply stores already-validated objects atomically; with dryRun it only
// reports what it would do. Objects carrying a resourceVersion must still
// be at that version (optimistic concurrency).
func (r *Resources) Apply(ctx context.Context, objs []resource.Object, dryRun bool) ([]adminapi.ApplyResult, error) {
	for i := range objs {
		if objs[i].Kind == resource.KindAuthorizationPolicy && resource.IsGeneratedPolicyName(objs[i].Metadata.Name) {
			return nil, &adminapi.ObjectError{Index: i, Resource: objs[i].Ref(), Err: errGenerated(objs[i].Metadata.Name)}
		}
	}
	if r.external != nil {
		if w, ok := r.src.(Writer); ok {
			return w.Apply(ctx, objs, dryRun)
		}
		return nil, ErrExternal
	}
	seen := make(map[string]int, len(objs))
	for i := range objs {
		kind, _ := resource.LookupKind(objs[i].Kind)
		key := resourceKey(kind, objs[i].Metadata.Namespace, objs[i].Metadata.Name)
		if j, dup := seen[key]; dup {
			return nil, &adminapi.ObjectError{Index: i, Resource: objs[i].Ref(), Err: fmt.Errorf("%w: the same resource appears twice in one apply (objects %d and %d)", errConflict, j, i)}
		}
		seen[key] = i
	}
	// A concurrent writer between our reads and the transaction makes the
	// transaction's conditions fail; re-read and retry a few times.
	for attempt := 0; ; attempt++ {
		results, ops, err := r.plan(ctx, objs)
		if err != nil {
			return nil, err
		}
		if dryRun || len(ops) == 0 {
			return results, nil
		}
		rev, err := r.st.Txn(ctx, ops...)
		if errors.Is(err, store.ErrConflict) && attempt < 4 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		for i := range results {
			if results[i].Result != adminapi.ResultUnchanged {
				results[i].ResourceVersion = strconv.FormatInt(rev, 10)
			}
		}
		return results, nil
	}
}

func (r *Resources) plan(ctx context.Context, objs []resource.Object) ([]adminapi.ApplyResult, []store.Op, error) {
	now := r.now().UTC().Truncate(time.Second)
	results := make([]adminapi.ApplyResult, len(objs))
	var ops []store.Op
	for i := range objs {
		o := objs[i]
		kind, _ := resource.LookupKind(o.Kind)
		key := resourceKey(kind, o.Metadata.Namespace, o.Metadata.Name)
		res := adminapi.ApplyResult{Kind: kind.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name}
		wantRV := o.Metadata.ResourceVersion
		kv, err := r.st.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if wantRV != "" {
				return nil, nil, &adminapi.ObjectError{Index: i, Resource: o.Ref(), Err: fmt.Errorf("%w: metadata.resourceVersion %s given but the resource does not exist; remove resourceVersion to create it", errConflict, wantRV)}
			}
			o.Metadata.UID = newUID()
			o.Metadata.Generation = 1
			o.Metadata.CreationTimestamp = &now
			o.Metadata.UpdateTimestamp = &now
			res.Result = adminapi.ResultCreated
			op, err := putOp(key, o, 0)
			if err != nil {
				return nil, nil, err
			}
			ops = append(ops, op)
		case err != nil:
			return nil, nil, fmt.Errorf("apply %s: %w", o.Ref(), err)
		default:
			cur, err := decodeStored(kv)
			if err != nil {
				return nil, nil, err
			}
			if wantRV != "" && wantRV != cur.Metadata.ResourceVersion {
				return nil, nil, &adminapi.ObjectError{Index: i, Resource: o.Ref(), Err: fmt.Errorf("%w: modified since you read it (resourceVersion %s, now %s); get it again and reapply", errConflict, wantRV, cur.Metadata.ResourceVersion)}
			}
			if sameContent(&cur, &o) {
				res.Result = adminapi.ResultUnchanged
				res.ResourceVersion = cur.Metadata.ResourceVersion
				break
			}
			o.Metadata.UID = cur.Metadata.UID
			o.Metadata.CreationTimestamp = cur.Metadata.CreationTimestamp
			o.Metadata.Generation = cur.Metadata.Generation
			if !bytes.Equal(cur.Spec, o.Spec) {
				o.Metadata.Generation++
			}
			o.Metadata.UpdateTimestamp = &now
			res.Result = adminapi.ResultConfigured
			// The transaction is conditioned on the revision cur was read
			// at, so these are exactly the changes it makes. Both objects
			// are valid; an error would only mean a stored object from an
			// older schema, and the apply need not fail for a report.
			res.Changes, _ = resource.Diff(&cur, &o)
			op, err := putOp(key, o, kv.ModRevision)
			if err != nil {
				return nil, nil, err
			}
			ops = append(ops, op)
		}
		results[i] = res
	}
	return results, ops, nil
}

func putOp(key string, o resource.Object, ifRev int64) (store.Op, error) {
	o.Metadata.ResourceVersion = ""
	val, err := json.Marshal(o)
	if err != nil {
		return store.Op{}, fmt.Errorf("encode %s: %w", o.Ref(), err)
	}
	return store.Op{Type: store.OpPut, Key: key, Value: val, IfModRevision: ifRev}, nil
}

func sameContent(a, b *resource.Object) bool {
	return bytes.Equal(a.Spec, b.Spec) && maps.Equal(a.Metadata.Labels, b.Metadata.Labels) && maps.Equal(a.Metadata.Annotations, b.Metadata.Annotations)
}

// Get returns one resource.
func (r *Resources) Get(ctx context.Context, kind resource.KindInfo, namespace, name string) (resource.Object, error) {
	if r.src != nil || (kind.Kind == resource.KindAuthorizationPolicy && resource.IsGeneratedPolicyName(name)) {
		objs, err := r.List(ctx, kind, namespace)
		if err != nil {
			return resource.Object{}, err
		}
		for _, o := range objs {
			if o.Metadata.Name == name {
				return o, nil
			}
		}
		return resource.Object{}, fmt.Errorf("%w: %s", errNotFound, refString(kind, namespace, name))
	}
	kv, err := r.st.Get(ctx, resourceKey(kind, namespace, name))
	if errors.Is(err, store.ErrNotFound) {
		return resource.Object{}, fmt.Errorf("%w: %s", errNotFound, refString(kind, namespace, name))
	}
	if err != nil {
		return resource.Object{}, fmt.Errorf("get %s: %w", refString(kind, namespace, name), err)
	}
	return decodeStored(kv)
}

// List returns a kind's resources; namespace "" means all namespaces.
// AuthorizationPolicies include those compiled from Intents.
func (r *Resources) List(ctx context.Context, kind resource.KindInfo, namespace string) ([]resource.Object, error) {
	out, err := r.list(ctx, kind, namespace)
	if err != nil || kind.Kind != resource.KindAuthorizationPolicy {
		return out, err
	}
	intentKind, _ := resource.LookupKind(resource.KindIntent)
	intents, err := r.list(ctx, intentKind, "")
	if err != nil {
		return nil, err
	}
	for _, o := range resource.CompileIntents(intents) {
		if namespace == "" || o.Metadata.Namespace == namespace {
			out = append(out, o)
		}
	}
	return out, nil
}

func (r *Resources) list(ctx context.Context, kind resource.KindInfo, namespace string) ([]resource.Object, error) {
	if r.src != nil {
		all, _ := r.src.Accepted()
		var out []resource.Object
		for _, o := range all {
			if o.Kind == kind.Kind && (!kind.Namespaced || namespace == "" || o.Metadata.Namespace == namespace) {
				out = append(out, o)
			}
		}
		return out, nil
	}
	prefix := resourcePrefix + kind.Plural + "/"
	if kind.Namespaced && namespace != "" {
		prefix += namespace + "/"
	}
	kvs, _, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind.Plural, err)
	}
	out := make([]resource.Object, 0, len(kvs))
	for _, kv := range kvs {
		o, err := decodeStored(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// Delete removes one resource. The Mesh singleton cannot be deleted.
func (r *Resources) Delete(ctx context.Context, kind resource.KindInfo, namespace, name string) error {
	ref := refString(kind, namespace, name)
	if kind.Kind == "Mesh" {
		return fmt.Errorf("%w: the Mesh %q always exists; apply a changed Mesh instead of deleting it", errForbidden, name)
	}
	if kind.Kind == resource.KindAuthorizationPolicy && resource.IsGeneratedPolicyName(name) {
		return errGenerated(name)
	}
	if r.external != nil {
		if w, ok := r.src.(Writer); ok {
			return w.Delete(ctx, kind, namespace, name)
		}
		return ErrExternal
	}
	key := resourceKey(kind, namespace, name)
	kv, err := r.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", errNotFound, ref)
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", ref, err)
	}
	if _, err := r.st.Txn(ctx, store.Op{Type: store.OpDelete, Key: key, IfModRevision: kv.ModRevision}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: %s changed while deleting; try again", errConflict, ref)
		}
		return fmt.Errorf("delete %s: %w", ref, err)
	}
	return nil
}

// errGenerated refuses a user's write of a policy compiled from Intents.
func errGenerated(name string) error {
	return fmt.Errorf("%w: AuthorizationPolicy names starting with %q are generated from Intents and cannot be applied or deleted; change or delete the Intents that call the service instead (trellis get intents), or name your own policy differently", errForbidden, resource.GeneratedPolicyPrefix)
}

func refString(kind resource.KindInfo, namespace, name string) string {
	if kind.Namespaced {
		return kind.Kind + " " + namespace + "/" + name
	}
	return kind.Kind + " " + name
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:]}, "-")
}
