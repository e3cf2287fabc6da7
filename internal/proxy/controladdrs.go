package proxy

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

// Several control plane addresses (--control A --control B, or A,B) are
// one gRPC target, controlScheme:///A,B, which every connection to the
// control plane dials: the config stream (internal/controlclient),
// Certify (internal/workloadcert) and, when it goes to the control plane,
// telemetry. Its resolver (controlResolver) runs gRPC's own DNS resolver
// for each address and hands the channel all their results in flag order;
// the channel's default load balancer, pick_first, connects to the first
// that answers and, when that connection fails, starts again from the top
// of the list at the next call, so a dead control plane costs one refused
// (or, unanswered, a 250 ms happy-eyeballs head start) connection attempt
// before the next address is tried. The waits between attempts are the
// callers' (the config stream's jittered backoff; gRPC's per-address
// reconnect backoff), not this resolver's.
//
// One address stays the plain target it always was: gRPC's default DNS
// resolver, which with pick_first already fails over between the
// addresses one name resolves to.
const controlScheme = "trellis-control"

// The builder holds no state: registering it once is the only
// process-wide effect, and every channel's resolver is its own.
func init() { resolver.Register(controlResolverBuilder{}) }

// controlDialTarget is the gRPC target for addrs (validated HOST:PORT values,
// at least one): the address itself when there is one, else
// controlScheme:///A,B,....
func controlDialTarget(addrs []string) string {
	if len(addrs) == 1 {
		return addrs[0]
	}
	esc := make([]string, len(addrs))
	for i, a := range addrs {
		esc[i] = url.PathEscape(a)
	}
	return controlScheme + ":///" + strings.Join(esc, ",")
}

// controlResolverBuilder builds a controlResolver for a controlScheme
// target. dnsServer, when set (tests), is the DNS server the addresses'
// names are looked up with instead of the system's.
type controlResolverBuilder struct{ dnsServer string }

func (controlResolverBuilder) Scheme() string { return controlScheme }

// OverrideAuthority gives the channel the first address as its authority,
// the one a single --control would have; each resolved address carries
// its own (see controlResolver.merge), which gRPC prefers.
func (controlResolverBuilder) OverrideAuthority(t resolver.Target) string {
	first, _, _ := strings.Cut(t.Endpoint(), ",")
	return authority(first)
}

// authority is the authority gRPC gives a target of addr alone: addr, or
// with an empty host, localhost's.
func authority(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	return addr
}

func (b controlResolverBuilder) Build(t resolver.Target, cc resolver.ClientConn, opts resolver.BuildOptions) (resolver.Resolver, error) {
	addrs := strings.Split(t.Endpoint(), ",")
	dns := resolver.Get("dns")
	if dns == nil {
		return nil, errors.New("control plane addresses: gRPC's dns resolver is not registered")
	}
	r := &controlResolver{cc: cc, addrs: addrs, results: make([]*resolver.State, len(addrs)), errs: make([]error, len(addrs))}
	// TXT-record service configs are not ours to follow.
	opts.DisableServiceConfig = true
	for i, a := range addrs {
		child, err := dns.Build(resolver.Target{URL: url.URL{Scheme: "dns", Host: b.dnsServer, Path: "/" + a}}, addrCC{r, i}, opts)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("control plane address %q: %w", a, err)
		}
		r.mu.Lock()
		r.children = append(r.children, child)
		r.mu.Unlock()
	}
	return r, nil
}

// controlResolver merges the DNS resolvers of several control plane
// addresses into one ordered address list. It publishes once every
// address has answered (addresses or an error), so the first connection
// goes to the first address in the list, not to the one resolved first.
type controlResolver struct {
	cc    resolver.ClientConn
	addrs []string

	// pub orders the publications (the latest answers last) without
	// holding mu while the channel takes one; mu guards what follows.
	pub      sync.Mutex
	mu       sync.Mutex
	children []resolver.Resolver
	results  []*resolver.State // per address; nil until it answered
	errs     []error           // per address: the last resolution error
	closed   bool
}

func (r *controlResolver) ResolveNow(o resolver.ResolveNowOptions) {
	r.mu.Lock()
	children := append([]resolver.Resolver(nil), r.children...)
	r.mu.Unlock()
	for _, c := range children {
		c.ResolveNow(o)
	}
}

func (r *controlResolver) Close() {
	r.mu.Lock()
	r.closed = true
	children := r.children
	r.children = nil
	r.mu.Unlock()
	for _, c := range children {
		c.Close()
	}
}

// update records address i's answer and publishes the merged list.
func (r *controlResolver) update(i int, s *resolver.State, err error) error {
	r.pub.Lock()
	defer r.pub.Unlock()
	state, ok, err := r.record(i, s, err)
	if !ok {
		return nil
	}
	if err != nil {
		r.cc.ReportError(err)
		return err
	}
	return r.cc.UpdateState(state)
}

// record keeps address i's answer and merges every address's; ok is false
// when there is nothing to publish (closed, an address yet to answer, or
// a failed lookup of one that has an answer, which gRPC's DNS resolver
// keeps too).
func (r *controlResolver) record(i int, s *resolver.State, lookupErr error) (state resolver.State, ok bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return state, false, nil
	}
	switch {
	case s != nil:
		r.results[i], r.errs[i] = s, nil
	case r.results[i] != nil:
		r.errs[i] = lookupErr
		return state, false, nil
	default:
		r.results[i], r.errs[i] = &resolver.State{}, lookupErr
	}
	if slices.Contains(r.results, nil) {
		return state, false, nil
	}
	state, err = r.merge()
	return state, true, err
}

// merge is every address's endpoints in flag order, each address named
// (TLS server name, :authority) after the --control value it came from,
// exactly as that value alone would name it; an error when there are
// none.
func (r *controlResolver) merge() (resolver.State, error) {
	var state resolver.State
	for i, res := range r.results {
		eps := res.Endpoints
		if len(eps) == 0 {
			for _, a := range res.Addresses {
				eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{a}})
			}
		}
		for _, ep := range eps {
			named := resolver.Endpoint{Attributes: ep.Attributes}
			for _, a := range ep.Addresses {
				a.ServerName = authority(r.addrs[i])
				named.Addresses = append(named.Addresses, a)
				state.Addresses = append(state.Addresses, a)
			}
			state.Endpoints = append(state.Endpoints, named)
		}
	}
	if len(state.Endpoints) > 0 {
		return state, nil
	}
	var errs []error
	for i, err := range r.errs {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.addrs[i], err))
		}
	}
	err := fmt.Errorf("no control plane address resolved (%s)", strings.Join(r.addrs, ", "))
	if len(errs) > 0 {
		err = fmt.Errorf("%w: %w", err, errors.Join(errs...))
	}
	return state, err
}

// addrCC is what the DNS resolver of address i reports to.
type addrCC struct {
	r *controlResolver
	i int
}

func (c addrCC) UpdateState(s resolver.State) error { return c.r.update(c.i, &s, nil) }

func (c addrCC) ReportError(err error) { _ = c.r.update(c.i, nil, err) }

func (c addrCC) NewAddress(addrs []resolver.Address) {
	_ = c.r.update(c.i, &resolver.State{Addresses: addrs}, nil)
}

func (c addrCC) ParseServiceConfig(js string) *serviceconfig.ParseResult {
	return c.r.cc.ParseServiceConfig(js)
}
