package resstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/store"
)

// Store keys the snapshot builder reads.
var (
	meshKey        = resourcePrefix + "meshes/default"
	policiesPrefix = resourcePrefix + "authorizationpolicies/"
	intentsPrefix  = resourcePrefix + "intents/"
	jwtPrefix      = resourcePrefix + "jwtauthentications/"
	rlPrefix       = resourcePrefix + "ratelimits/"
	grPrefix       = resourcePrefix + "gatewayroutes/"
	egressPrefix   = resourcePrefix + "egresspolicies/"
	trafficPrefix  = resourcePrefix + "trafficpolicies/"
	routePrefix    = resourcePrefix + "routes/"
)

// selected are the kinds proxies get the objects of that select them,
// decoded for snapshots, by store prefix.
var selected = map[string]func(*resource.Object) (snapshot.Policy, error){
	jwtPrefix:     snapshot.JWTAuthnFromObject,
	rlPrefix:      snapshot.RateLimitFromObject,
	grPrefix:      snapshot.GatewayRouteFromObject,
	egressPrefix:  snapshot.EgressPolicyFromObject,
	trafficPrefix: snapshot.TrafficPolicyFromObject,
	routePrefix:   snapshot.RouteFromObject,
}

// Cache is the decoded view of the resources snapshots are built from,
// kept current by Watch (the store) or Follow (an external Source).
// Decoding happens once per change, not once per push round. Safe for
// concurrent use.
type Cache struct {
	log   *slog.Logger
	clock clock.Clock // times the retry after a store error

	mu       sync.Mutex
	gen      uint64
	mesh     resource.MeshSpec
	policies map[string]snapshot.Policy // by store key
	intents  map[string]resource.Object // by store key
	jwt      map[string]snapshot.Policy // JWTAuthentications, RateLimits, GatewayRoutes and EgressPolicies, by store key
	// generated are the policies compiled from intents, as of genAt.
	generated []snapshot.Policy
	genAt     uint64
}

// NewCache returns a cache holding the default Mesh and no policies. clk
// times the retry after a store error; nil means the real clock.
func NewCache(log *slog.Logger, clk clock.Clock) *Cache {
	c := &Cache{log: log, clock: clock.Or(clk), policies: map[string]snapshot.Policy{}, intents: map[string]resource.Object{}, jwt: map[string]snapshot.Policy{}}
	c.mesh = defaultMeshSpec()
	return c
}

func defaultMeshSpec() resource.MeshSpec {
	m := resource.DefaultMesh()
	spec, err := resource.MeshSpecOf(&m)
	if err != nil {
		panic("resstore: the default mesh does not decode: " + err.Error())
	}
	return spec
}

// State returns the mesh settings, the policies (in no order; the builder
// sorts) and the generation they reflect.
func (c *Cache) State() (resource.MeshSpec, []snapshot.Policy, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.genAt != c.gen {
		c.generated = c.compileIntentsLocked()
		c.genAt = c.gen
	}
	ps := make([]snapshot.Policy, 0, len(c.policies)+len(c.generated))
	for _, p := range c.policies {
		ps = append(ps, p)
	}
	ps = append(ps, c.generated...)
	return c.mesh, ps, c.gen
}

// JWTAuthns returns the JWTAuthentication resources, in no order.
func (c *Cache) JWTAuthns() []snapshot.Policy { return c.selectedUnder(jwtPrefix) }

// RateLimits returns the RateLimit resources, in no order.
func (c *Cache) RateLimits() []snapshot.Policy { return c.selectedUnder(rlPrefix) }

// GatewayRoutes returns the GatewayRoute resources, in no order.
func (c *Cache) GatewayRoutes() []snapshot.Policy { return c.selectedUnder(grPrefix) }

// TrafficPolicies returns the TrafficPolicy resources, in no order.
func (c *Cache) TrafficPolicies() []snapshot.Policy { return c.selectedUnder(trafficPrefix) }

// Routes returns the Route resources, in no order.
func (c *Cache) Routes() []snapshot.Policy { return c.selectedUnder(routePrefix) }

// EgressPolicies returns the EgressPolicy resources, in no order.
func (c *Cache) EgressPolicies() []snapshot.Policy { return c.selectedUnder(egressPrefix) }

func (c *Cache) selectedUnder(prefix string) []snapshot.Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []snapshot.Policy
	for k, p := range c.jwt {
		if strings.HasPrefix(k, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// selectedPrefix is the prefix of selected under which key lies, or "".
func selectedPrefix(key string) string {
	for p := range selected {
		if strings.HasPrefix(key, p) {
			return p
		}
	}
	return ""
}

// compileIntentsLocked compiles the cached Intents into their policies.
func (c *Cache) compileIntentsLocked() []snapshot.Policy {
	if len(c.intents) == 0 {
		return nil
	}
	objs := make([]resource.Object, 0, len(c.intents))
	for _, o := range c.intents {
		objs = append(objs, o)
	}
	var out []snapshot.Policy
	for _, o := range resource.CompileIntents(objs) {
		p, err := snapshot.PolicyFromObject(&o)
		if err != nil {
			c.log.Error("config push: policy generated from intents ignored", "policy", o.Ref(), "err", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// Load lists the resources and replaces the cache with them. It returns the
// store revision to watch from.
func (c *Cache) Load(ctx context.Context, st store.Store) (int64, error) {
	kvs, rev, err := st.List(ctx, resourcePrefix)
	if err != nil {
		return 0, fmt.Errorf("load resources for config push: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mesh = defaultMeshSpec()
	clear(c.policies)
	clear(c.intents)
	clear(c.jwt)
	for _, kv := range kvs {
		c.putLocked(kv)
	}
	c.gen++
	return rev, nil
}

// Replace sets the cache to objs (an external Source's accepted
// objects): the Mesh named default, and the policies.
func (c *Cache) Replace(objs []resource.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mesh = defaultMeshSpec()
	clear(c.policies)
	clear(c.intents)
	clear(c.jwt)
	for i := range objs {
		o := &objs[i]
		kind, ok := resource.LookupKind(o.Kind)
		if !ok {
			continue
		}
		key := resourceKey(kind, o.Metadata.Namespace, o.Metadata.Name)
		switch {
		case key == meshKey:
			if spec, err := resource.MeshSpecOf(o); err == nil {
				c.mesh = spec
			} else {
				c.log.Error("config push: mesh ignored; keeping the default settings", "err", err)
			}
		case strings.HasPrefix(key, policiesPrefix):
			if p, err := snapshot.PolicyFromObject(o); err == nil {
				c.policies[key] = p
			} else {
				c.log.Error("config push: policy ignored", "key", key, "err", err)
			}
		case strings.HasPrefix(key, intentsPrefix):
			c.intents[key] = *o
		case selectedPrefix(key) != "":
			if p, err := selected[selectedPrefix(key)](o); err == nil {
				c.jwt[key] = p
			} else {
				c.log.Error("config push: resource ignored", "key", key, "err", err)
			}
		}
	}
	c.gen++
}

// Follow keeps the cache current from an external source until ctx is
// done, calling changed after every change.
func (c *Cache) Follow(ctx context.Context, src Source, changed func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-src.Changed():
		}
		objs, _ := src.Accepted()
		c.Replace(objs)
		changed()
	}
}

// meshSpec is the cached Mesh settings.
func (c *Cache) meshSpec() resource.MeshSpec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mesh
}

// apply folds one watch event into the cache.
func (c *Cache) apply(ev store.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Type {
	case store.EventPut:
		c.putLocked(ev.KV)
	case store.EventDelete:
		switch {
		case ev.KV.Key == meshKey:
			c.mesh = defaultMeshSpec()
		case strings.HasPrefix(ev.KV.Key, policiesPrefix):
			delete(c.policies, ev.KV.Key)
		case strings.HasPrefix(ev.KV.Key, intentsPrefix):
			delete(c.intents, ev.KV.Key)
		case selectedPrefix(ev.KV.Key) != "":
			delete(c.jwt, ev.KV.Key)
		}
	}
	c.gen++
}

// putLocked decodes one stored resource. A value that does not decode
// (it passed validation when applied, so this means a bug or a hand-edited
// store) is left out and logged, rather than stopping every push.
func (c *Cache) putLocked(kv store.KV) {
	switch {
	case kv.Key == meshKey:
		o, err := decodeStored(kv)
		if err == nil {
			var spec resource.MeshSpec
			if spec, err = resource.MeshSpecOf(&o); err == nil {
				c.mesh = spec
				return
			}
		}
		c.log.Error("config push: stored mesh ignored; keeping the previous settings", "key", kv.Key, "err", err)
	case strings.HasPrefix(kv.Key, policiesPrefix):
		o, err := decodeStored(kv)
		if err == nil {
			var p snapshot.Policy
			if p, err = snapshot.PolicyFromObject(&o); err == nil {
				c.policies[kv.Key] = p
				return
			}
		}
		delete(c.policies, kv.Key)
		c.log.Error("config push: stored policy ignored", "key", kv.Key, "err", err)
	case strings.HasPrefix(kv.Key, intentsPrefix):
		o, err := decodeStored(kv)
		if err != nil {
			delete(c.intents, kv.Key)
			c.log.Error("config push: stored intent ignored", "key", kv.Key, "err", err)
			return
		}
		c.intents[kv.Key] = o
	case selectedPrefix(kv.Key) != "":
		o, err := decodeStored(kv)
		var p snapshot.Policy
		if err == nil {
			p, err = selected[selectedPrefix(kv.Key)](&o)
		}
		if err != nil {
			delete(c.jwt, kv.Key)
			c.log.Error("config push: stored resource ignored", "key", kv.Key, "err", err)
			return
		}
		c.jwt[kv.Key] = p
	}
}

// Watch keeps the cache current from revision rev on, calling changed after
// every change, until ctx is done. When the store cannot replay from where
// it stopped (compacted history, a watcher that fell behind), it lists
// again and watches from the listing's revision.
func (c *Cache) Watch(ctx context.Context, st store.Store, rev int64, changed func()) {
	const retry = time.Second
	for ctx.Err() == nil {
		if rev < 0 {
			r, err := c.Load(ctx, st)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
					return
				}
				c.log.Error("config push: resource watch", "err", err)
				sleepCtx(ctx, c.clock, retry)
				continue
			}
			rev = r
			changed()
		}
		events, err := st.Watch(ctx, resourcePrefix, rev)
		switch {
		case err == nil:
		case errors.Is(err, store.ErrClosed) || ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrCompacted):
			rev = -1
			continue
		default:
			c.log.Error("config push: resource watch", "err", err)
			rev = -1
			sleepCtx(ctx, c.clock, retry)
			continue
		}
		for ev := range events {
			c.apply(ev)
			rev = ev.Revision
			changed()
		}
		// Closed by the store: ctx is done, the store closed, or we fell
		// behind and events were dropped; only a fresh listing is safe.
		rev = -1
	}
}

// sleepCtx waits d on clk, or until ctx is done.
func sleepCtx(ctx context.Context, clk clock.Clock, d time.Duration) {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}
