package vips

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/store"
)

// Store layout, both keys written in one transaction, each conditioned on
// its absence, so that two control planes sharing a store can never give
// one service two addresses or one address to two services:
//
//	/vips/<namespace>/<name>  -> the IP (text)
//	/vip-addrs/<ip>           -> "<namespace>/<name>" (the reverse index)
const (
	vipPrefix     = "/vips/"
	vipAddrPrefix = "/vip-addrs/"
)

// vipTimeout bounds the store writes of one allocation.
const vipTimeout = 5 * time.Second

// DefaultRange is where services' virtual IPs come from when no range is
// configured: part of 240.0.0.0/4, reserved and never routed, so a VIP
// never shadows a real destination.
var DefaultRange = netip.MustParsePrefix("240.240.0.0/16")

// serviceKey names a service (snapshot.ServiceKey).
type serviceKey = snapshot.ServiceKey

// Allocator assigns virtual IPs. Its methods are safe for concurrent use;
// Assign does store I/O and is meant for the push loop, outside the pure
// snapshot builder.
type Allocator struct {
	st    store.Store
	rng   vipRange
	log   *slog.Logger
	mu    sync.Mutex
	byKey map[serviceKey]netip.Addr
	used  map[netip.Addr]serviceKey
	// stale holds services whose stored address lies outside the current
	// range (the range was changed), by the key's ModRevision: they are
	// given a new address, overwriting the old one.
	stale map[serviceKey]int64
	// warned holds services already logged as left without an address.
	warned map[serviceKey]bool
}

// vipRange is the usable part of a prefix: offsets 1..size-2 from the
// network address (never the network or broadcast address).
type vipRange struct {
	prefix netip.Prefix
	size   uint64 // addresses in the prefix, capped at 1<<63
}

func newVIPRange(p netip.Prefix) vipRange {
	host := p.Addr().BitLen() - p.Bits()
	size := uint64(1) << 63
	if host < 63 {
		size = 1 << host
	}
	return vipRange{prefix: p, size: size}
}

// usable is how many addresses the range can hand out.
func (r vipRange) usable() uint64 {
	if r.size < 3 {
		return 0
	}
	return r.size - 2
}

// addr is the address at offset from the network address.
func (r vipRange) addr(offset uint64) netip.Addr {
	b := r.prefix.Addr().AsSlice()
	n := new(big.Int).SetBytes(b)
	n.Add(n, new(big.Int).SetUint64(offset))
	n.FillBytes(b)
	a, _ := netip.AddrFromSlice(b)
	return a
}

// contains reports whether a is one the range may hand out.
func (r vipRange) contains(a netip.Addr) bool {
	if !r.prefix.Contains(a) {
		return false
	}
	off := new(big.Int).Sub(new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(r.prefix.Addr().AsSlice()))
	return off.Sign() > 0 && off.IsUint64() && off.Uint64() < r.size-1
}

// start is where probing for k begins: a hash of its name, so that a
// service usually gets the same address in every fresh mesh.
func (r vipRange) start(k serviceKey) uint64 {
	h := fnv.New64a()
	h.Write([]byte(k.String()))
	return 1 + binary.BigEndian.Uint64(h.Sum(nil))%r.usable()
}

// Load reads the stored assignments and returns an allocator handing out
// addresses of prefix (checked with ValidateRange).
func Load(ctx context.Context, st store.Store, prefix netip.Prefix, log *slog.Logger) (*Allocator, error) {
	a := &Allocator{
		st: st, rng: newVIPRange(prefix), log: log,
		byKey: map[serviceKey]netip.Addr{}, used: map[netip.Addr]serviceKey{},
		stale: map[serviceKey]int64{}, warned: map[serviceKey]bool{},
	}
	kvs, _, err := st.List(ctx, vipPrefix)
	if err != nil {
		return nil, fmt.Errorf("read virtual IPs: %w", err)
	}
	for _, kv := range kvs {
		ns, name, ok := strings.Cut(strings.TrimPrefix(kv.Key, vipPrefix), "/")
		ip, err := netip.ParseAddr(string(kv.Value))
		if !ok || err != nil {
			log.Warn("ignoring a malformed virtual IP record", "key", kv.Key, "value", string(kv.Value))
			continue
		}
		k := serviceKey{Namespace: ns, Name: name}
		if !a.rng.contains(ip) {
			a.stale[k] = kv.ModRevision
			continue
		}
		a.byKey[k], a.used[ip] = ip, k
	}
	// An address once handed out is never reused, even when its service
	// was given another one since (a changed range): the reverse index
	// is the authority on taken addresses.
	addrs, _, err := st.List(ctx, vipAddrPrefix)
	if err != nil {
		return nil, fmt.Errorf("read virtual IPs: %w", err)
	}
	for _, kv := range addrs {
		ip, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, vipAddrPrefix))
		if err != nil || !a.rng.contains(ip) {
			continue
		}
		if _, ok := a.used[ip]; !ok {
			ns, name, _ := strings.Cut(string(kv.Value), "/")
			a.used[ip] = serviceKey{Namespace: ns, Name: name}
		}
	}
	if len(a.stale) > 0 {
		log.Warn("services have virtual IPs outside --vip-range (was it changed?); they get new ones, so clients holding the old ones must resolve again",
			"services", len(a.stale), "vip_range", prefix.String())
	}
	return a, nil
}

// Assign returns the virtual IP of every service in keys, allocating and
// storing addresses for those that have none. A service left without one
// (range full, store unavailable) is absent from the result and logged;
// the next call tries again. Keys should be sorted (ServiceKeys).
func (a *Allocator) Assign(keys []serviceKey) map[serviceKey]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[serviceKey]string, len(keys))
	var fresh []serviceKey
	for _, k := range keys {
		if ip, ok := a.byKey[k]; ok {
			out[k] = ip.String()
		} else {
			fresh = append(fresh, k)
		}
	}
	if len(fresh) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), vipTimeout)
	defer cancel()
	// Usually one transaction for everything new; one per service only
	// when another writer got in the way.
	if picked, err := a.allocate(ctx, fresh); err == nil {
		for k, ip := range picked {
			out[k] = ip.String()
		}
		return out
	} else if !errors.Is(err, store.ErrConflict) {
		a.log.Error("cannot store virtual IPs; the services get none until the registry next changes", "services", len(fresh), "err", err)
		return out
	}
	for _, k := range fresh {
		ip, err := a.allocateOne(ctx, k)
		if err != nil {
			a.log.Error("cannot store a virtual IP; the service gets none until the registry next changes", "service", k.String(), "err", err)
			continue
		}
		if ip.IsValid() {
			out[k] = ip.String()
		}
	}
	return out
}

// Known returns the assigned address of k without assigning one ("" for
// none, or a nil Allocator).
func (a *Allocator) Known(k serviceKey) string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byKey[k]; ok {
		return ip.String()
	}
	return ""
}

// allocate picks addresses for keys and stores them in one transaction.
// On any error nothing is kept.
func (a *Allocator) allocate(ctx context.Context, keys []serviceKey) (map[serviceKey]netip.Addr, error) {
	picked := map[serviceKey]netip.Addr{}
	var ops []store.Op
	for _, k := range keys {
		ip, ok := a.pick(k, picked)
		if !ok {
			continue
		}
		picked[k] = ip
		ops = append(ops, a.ops(k, ip)...)
	}
	if len(ops) == 0 {
		return picked, nil
	}
	if _, err := a.st.Txn(ctx, ops...); err != nil {
		return nil, err
	}
	for k, ip := range picked {
		a.keep(k, ip)
	}
	return picked, nil
}

// allocateOne stores an address for k, learning from conflicts what other
// writers stored. It returns the zero Addr when the range is full.
func (a *Allocator) allocateOne(ctx context.Context, k serviceKey) (netip.Addr, error) {
	for range 8 {
		ip, ok := a.pick(k, nil)
		if !ok {
			return netip.Addr{}, nil
		}
		_, err := a.st.Txn(ctx, a.ops(k, ip)...)
		if err == nil {
			a.keep(k, ip)
			return ip, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return netip.Addr{}, err
		}
		// Either k got an address elsewhere (adopt it) or ip is taken.
		kv, err := a.st.Get(ctx, vipPrefix+k.String())
		switch {
		case err == nil:
			if theirs, perr := netip.ParseAddr(string(kv.Value)); perr == nil && a.rng.contains(theirs) {
				a.keep(k, theirs)
				return theirs, nil
			}
			a.stale[k] = kv.ModRevision
		case errors.Is(err, store.ErrNotFound):
			delete(a.stale, k)
		default:
			return netip.Addr{}, err
		}
		if _, err := a.st.Get(ctx, vipAddrPrefix+ip.String()); err == nil {
			a.used[ip] = serviceKey{}
		} else if !errors.Is(err, store.ErrNotFound) {
			return netip.Addr{}, err
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate virtual IP for %s: store conflicts keep recurring", k)
}

// pick finds a free address for k, probing linearly from its hash, also
// skipping addresses in taken; false when the range is full.
func (a *Allocator) pick(k serviceKey, taken map[serviceKey]netip.Addr) (netip.Addr, bool) {
	n := a.rng.usable()
	if uint64(len(a.used)+len(taken)) >= n {
		if !a.warned[k] {
			a.warned[k] = true
			a.log.Error("virtual IP range exhausted: the service gets no virtual IP (mesh DNS cannot resolve it); give the control plane a larger --vip-range",
				"service", k.String(), "vip_range", a.rng.prefix.String(), "assigned", len(a.used))
		}
		return netip.Addr{}, false
	}
	inBatch := make(map[netip.Addr]bool, len(taken))
	for _, ip := range taken {
		inBatch[ip] = true
	}
	off := a.rng.start(k)
	for range n {
		ip := a.rng.addr(off)
		if _, used := a.used[ip]; !used && !inBatch[ip] {
			return ip, true
		}
		off++
		if off > n {
			off = 1
		}
	}
	return netip.Addr{}, false
}

// ops are the writes storing ip for k: both keys must be absent, except a
// stale record of k, which is replaced.
func (a *Allocator) ops(k serviceKey, ip netip.Addr) []store.Op {
	cond := int64(0)
	if rev, ok := a.stale[k]; ok {
		cond = rev
	}
	return []store.Op{
		{Type: store.OpPut, Key: vipPrefix + k.String(), Value: []byte(ip.String()), IfModRevision: cond},
		{Type: store.OpPut, Key: vipAddrPrefix + ip.String(), Value: []byte(k.String()), IfModRevision: 0},
	}
}

func (a *Allocator) keep(k serviceKey, ip netip.Addr) {
	a.byKey[k], a.used[ip] = ip, k
	delete(a.stale, k)
	delete(a.warned, k)
}

// ServiceKeys lists the distinct services of ws and idle, sorted (so which
// of two services probing for one address gets it does not depend on map
// order).
func ServiceKeys(ws []snapshot.Workload, idle []snapshot.IdleService) []serviceKey {
	seen := make(map[serviceKey]bool, len(ws)+len(idle))
	var out []serviceKey
	add := func(k serviceKey) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, w := range ws {
		add(serviceKey{Namespace: w.Namespace, Name: w.Service})
	}
	for _, svc := range idle {
		add(serviceKey{Namespace: svc.Namespace, Name: svc.Name})
	}
	slices.SortFunc(out, func(a, b serviceKey) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// ValidateRange checks --vip-range: an IPv4 or IPv6 network address with
// at least one address besides the network and broadcast ones.
func ValidateRange(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("--vip-range %s: want an IPv4 or IPv6 prefix, e.g. %s", p, DefaultRange)
	case p.Addr().Is4In6() || p.Addr().Zone() != "":
		return fmt.Errorf("--vip-range %s: want a plain IPv4 or IPv6 prefix, e.g. %s", p, DefaultRange)
	case p.Masked() != p:
		return fmt.Errorf("--vip-range %s: not a network address; did you mean %s?", p, p.Masked())
	case newVIPRange(p).usable() == 0:
		return fmt.Errorf("--vip-range %s: leaves no address besides the network and broadcast ones; use a prefix of /30 or shorter (IPv6: /126), e.g. %s", p, DefaultRange)
	}
	return nil
}

// Range returns the prefix the allocator hands addresses out of.
func (a *Allocator) Range() netip.Prefix { return a.rng.prefix }

// Covering returns, per address family, the longest prefix holding every
// address in vips (values that are no address are skipped): where
// virtual IPs are when something else (Kubernetes) assigns them.
func Covering(vips map[serviceKey]string) []netip.Prefix {
	var out []netip.Prefix
	for _, v4 := range []bool{true, false} {
		var p netip.Prefix
		for _, s := range vips {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Unmap().Is4() != v4 {
				continue
			}
			a = a.Unmap()
			if !p.IsValid() {
				p = netip.PrefixFrom(a, a.BitLen())
				continue
			}
			for !p.Contains(a) {
				p, _ = p.Addr().Prefix(p.Bits() - 1)
			}
		}
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}
