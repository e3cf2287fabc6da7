package dataplane

import (
	"net/http"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/dataplane/h2relay"
	"github.com/trellismesh/trellis/internal/h1"
)

// KeyedBalancer is a Balancer that can also pick by a request's hash key
// (consistent hashing). PickKey follows Pick's contract; the same key
// picks the same endpoint while the endpoint set and their health stay
// the same.
type KeyedBalancer interface {
	Balancer
	PickKey(key uint64, avoid *PeerEndpoint) *PeerEndpoint
}

// NewConsistentHash returns a KeyedBalancer hashing keys onto eps by
// rendezvous (highest random weight) hashing: an endpoint that leaves or
// is ejected moves only its own keys, and every proxy agrees on the
// mapping since the weights derive from the endpoint addresses. Pick
// (a request without a key) falls back to fallback.
func NewConsistentHash(eps []*PeerEndpoint, fallback Balancer) KeyedBalancer {
	seeds := make([]uint64, len(eps))
	for i, e := range eps {
		seeds[i] = hashString(e.addr)
	}
	return &rendezvous{eps: eps, seeds: seeds, fallback: fallback}
}

type rendezvous struct {
	eps      []*PeerEndpoint
	seeds    []uint64
	fallback Balancer
}

func (b *rendezvous) Pick(avoid *PeerEndpoint) *PeerEndpoint { return b.fallback.Pick(avoid) }

func (b *rendezvous) PickKey(key uint64, avoid *PeerEndpoint) *PeerEndpoint {
	now := time.Now().UnixNano()
	var best *PeerEndpoint
	var bestW uint64
	for i, e := range b.eps {
		if e == avoid || !e.healthyAt(now) {
			continue
		}
		if w := mix64(key ^ b.seeds[i]); best == nil || w > bestW {
			best, bestW = e, w
		}
	}
	if best == nil {
		return b.fallback.Pick(avoid)
	}
	return best
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// cookieValue returns the value of cookie name in a Cookie header.
func cookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// pickFirst picks the first endpoint of a request: by its hash key when
// the service hashes on a header or cookie and the request has it, else
// by the service's balancer. get returns a request header's first value.
func (rt *route) pickFirst(get func(name string) string) *PeerEndpoint {
	if rt.keyed == nil {
		return rt.bal.Pick(nil)
	}
	var v string
	if rt.hashHeader != "" {
		v = get(rt.hashHeader)
	} else {
		v, _ = cookieValue(get("Cookie"), rt.hashCookie)
	}
	if v == "" {
		return rt.bal.Pick(nil)
	}
	return rt.keyed.PickKey(hashString(v), nil)
}

// pickH1, pickHTTP and pickH2 are pickFirst for each forward path.
func (rt *route) pickH1(req *h1.Head) *PeerEndpoint {
	if rt.keyed == nil {
		return rt.bal.Pick(nil)
	}
	return rt.pickFirst(req.Get)
}

func (rt *route) pickHTTP(r *http.Request) *PeerEndpoint {
	if rt.keyed == nil {
		return rt.bal.Pick(nil)
	}
	return rt.pickFirst(r.Header.Get)
}

func (rt *route) pickH2(req *h2relay.Request) *PeerEndpoint {
	if rt.keyed == nil {
		return rt.bal.Pick(nil)
	}
	return rt.pickFirst(func(name string) string {
		// HTTP/2 may split cookies into several fields (RFC 9113 8.2.3).
		cookie := name == "Cookie"
		for _, f := range req.Fields {
			if len(f.Name) != len(name) || !strings.EqualFold(f.Name, name) {
				continue
			}
			if !cookie {
				return f.Value
			}
			if _, ok := cookieValue(f.Value, rt.hashCookie); ok {
				return f.Value
			}
		}
		return ""
	})
}
