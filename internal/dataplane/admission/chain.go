package admission

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/extauthz"
	"github.com/trellismesh/trellis/internal/jwtauthn"
	"github.com/trellismesh/trellis/internal/meshconfig"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/ratelimit"
)

// The inbound admission chain: the checks every inbound HTTP request
// passes before the app, whatever carries it (the HTTP/1.1 fast path or
// net/http over HTTP/1.x or HTTP/2). Each transport wraps its request in a
// View, runs Chain.Admit, and writes the verdict its own way. A new
// inbound step (end-user JWT, external authorization, rate limits) is one
// more entry in steps, so no path can miss it.

// View is what admission sees of a request: read access to the
// request line and fields, and the removal of fields only the proxy may
// set. Values are valid during admit only.
type View interface {
	Method() string
	// RawPath is the request target's path as received, still
	// percent-encoded, without the query.
	RawPath() string
	// RawQuery is the request target's query, without '?'.
	RawQuery() string
	// Proto is "HTTP/1.1", "HTTP/1.0" or "HTTP/2".
	Proto() string
	Host() string
	// HTTP11 is true for an HTTP/1.1 request (false for HTTP/1.0 and
	// HTTP/2), the only version an Upgrade is taken on.
	HTTP11() bool
	// Get returns the first value of a field, case-insensitively.
	Get(name string) string
	// Values returns every value of a field, case-insensitively.
	Values(name string) []string
	// Filter runs screenField on every field name, removing the fields
	// it drops; it stops at the first refusal.
	Filter(strip *meshconfig.HeaderStrip) *Refusal
	// SetPath replaces the path the app receives (the query stays).
	SetPath(path string)
	// SetHeader replaces a field's values with value; DelHeader removes
	// a field (the authenticate step's forwarded claims and token).
	SetHeader(name, value string)
	DelHeader(name string)
	// Header is the view for the authorizer: the fields as an
	// http.Header, or else a lookup (see Request).
	Header() (http.Header, func(string) string)
}

// Peer is the caller as the inbound's transport established it.
type Peer struct {
	// ID is the caller's SPIFFE ID; zero for a plaintext caller
	// (PERMISSIVE mode).
	ID spiffeid.ID
	// Principal is ID as a string, "" for plaintext.
	Principal string
	// MTLS: the connection is mutual TLS.
	MTLS bool
	// Addr is a client's IP address at an ingress gateway (the per-caller
	// rate limit key of callers without a token); "" on sidecars.
	Addr string
}

// Recorder counts what admission decides (the data path's metrics). It
// must not block.
type Recorder interface {
	// RefusedRequest counts a request refused before the app, by reason
	// (ReasonBadRequest here).
	RefusedRequest(reason string)
	// Decided counts an authorization decision.
	Decided(d Decision)
}

// ReasonBadRequest is the Recorder reason of the screen's refusals (400).
const ReasonBadRequest = "bad_request"

// Chain is one inbound's admission chain. Its fields are set at
// construction and not changed after.
type Chain struct {
	// Authorizer decides each request that passes the screen.
	Authorizer Authorizer
	// Protocol is the inbound's service protocol (meshconfig.Protocol*).
	Protocol string
	// Recorder counts refusals and decisions; nil counts nothing.
	Recorder Recorder
	// Log gets a debug line per denial; nil means slog.Default.
	Log *slog.Logger
	// Ingress is an ingress gateway's chain: its clients are outside the
	// mesh, so plaintext (or server-only TLS) is expected, not refused.
	Ingress bool
	// ExtAuthz asks the providers of CUSTOM policies; nil fails those
	// requests closed.
	ExtAuthz *extauthz.Pool
	// Self is the workload's SPIFFE ID, the destination principal sent
	// to providers.
	Self string
}

// Verdict is how admission ended.
type Verdict struct {
	// Refused is the answer when the request does not reach the app.
	Refused *Refusal
	// Path is the canonical path (policy.CanonicalPath), what policies
	// matched and the app receives.
	Path string
	// Upgrade is the protocol an admitted Upgrade switches to, or "".
	Upgrade string
	// Authorized says authorization ran; Decision is then its outcome.
	Authorized bool
	Decision   Decision
	// User is the end user's verified token, nil without one.
	User *jwtauthn.Result

	// authz is the request handed to the Authorizer, kept here so that
	// a Verdict reused per connection allocates none per request;
	// custom, likewise, holds the matching CUSTOM policies.
	authz  Request
	custom [2]policy.CustomMatch
}

// step is one check; false stops the chain with v.Refused set.
type step func(c *Chain, r View, p Peer, snap *meshconfig.Snapshot, v *Verdict) bool

// steps run in this order; the first refusal wins.
var steps = []step{
	requireSnapshot,
	requireMTLS,
	screenMethod,
	screenFields,
	canonicalizePath,
	screenUpgrade,
	authenticate,
	authorize,
	custom,
	rateLimit,
}

// Admit runs the admission chain for one request into v. The caller owns
// v: the fast path keeps one per connection, so the steps (called through
// function values, which makes v escape) allocate nothing per request.
func (c *Chain) Admit(r View, p Peer, snap *meshconfig.Snapshot, v *Verdict) {
	*v = Verdict{}
	for _, s := range steps {
		if !s(c, r, p, snap, v) {
			return
		}
	}
}

// refuse ends the chain with rf.
func (v *Verdict) refuse(rf *Refusal) bool {
	v.Refused = rf
	return false
}

func (c *Chain) refused(reason string) {
	if c.Recorder != nil {
		c.Recorder.RefusedRequest(reason)
	}
}

// requireSnapshot: nothing is admitted before the first configuration.
func requireSnapshot(_ *Chain, _ View, _ Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	if snap == nil {
		return v.refuse(&Refusal{Code: http.StatusServiceUnavailable, Msg: "trellis: inbound has no configuration yet\n"})
	}
	return true
}

// requireMTLS: a plaintext connection accepted while PERMISSIVE outlives
// a switch to STRICT; its requests stop here, and the connection closes.
func requireMTLS(c *Chain, _ View, p Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	if !p.MTLS && snap.MTLSMode != "PERMISSIVE" && !c.Ingress {
		return v.refuse(&Refusal{Code: http.StatusForbidden, Msg: "trellis: mutual TLS required\n", Close: true})
	}
	return true
}

// screenMethod refuses standard methods in another case (checkMethod).
func screenMethod(c *Chain, r View, _ Peer, _ *meshconfig.Snapshot, v *Verdict) bool {
	if rf := checkMethod(r.Method()); rf != nil {
		c.refused(ReasonBadRequest)
		return v.refuse(rf)
	}
	return true
}

// screenFields removes what only the proxy may say for the caller (every
// spelling of X-Forwarded-Client-Cert, the mesh's strip list) before any
// policy sees the request, and refuses framing look-alikes.
func screenFields(c *Chain, r View, _ Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	if rf := r.Filter(snap.HeaderStrip()); rf != nil {
		c.refused(ReasonBadRequest)
		return v.refuse(rf)
	}
	return true
}

// canonicalizePath: policies see, and the app receives, one canonical
// path; forms the mesh's path mode refuses get 400.
func canonicalizePath(c *Chain, r View, _ Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	raw := r.RawPath()
	canon, err := policy.CanonicalPath(raw, snap.PathMode)
	if err != nil {
		c.refused(ReasonBadRequest)
		return v.refuse(BadRequest(err.Error()))
	}
	if canon != raw {
		r.SetPath(canon)
	}
	v.Path = canon
	return true
}

// screenUpgrade admits an Upgrade only to an allowed protocol on an
// HTTP/1.1 GET (checkUpgrade).
func screenUpgrade(c *Chain, r View, _ Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	up, rf := checkUpgrade(r, snap.AllowedUpgrades)
	if rf != nil {
		c.refused(ReasonBadRequest)
		return v.refuse(rf)
	}
	v.Upgrade = up
	return true
}

// ReasonRateLimited is the Recorder reason of a request over a RateLimit
// (429).
const ReasonRateLimited = "rate_limited"

// rateLimit takes a token of every RateLimit selecting the workload, per
// caller (CallerKey) or one for all; over a limit is 429 with
// Retry-After.
func rateLimit(c *Chain, _ View, p Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	if len(snap.RateLimits) == 0 {
		return true
	}
	now := time.Now()
	for i := range snap.RateLimits {
		rl := &snap.RateLimits[i]
		key := ""
		if rl.PerCall {
			key = v.CallerKey(p)
		}
		if rf := c.Take(rl.Limiter, key, rl.Ref, now); rf != nil {
			return v.refuse(rf)
		}
	}
	return true
}

// CallerKey is the caller as per-caller rate limits count it: its SPIFFE
// ID; without one (plaintext, or a gateway's client) the end user's
// request principal, else the client's address, else the shared
// "plaintext" bucket.
func (v *Verdict) CallerKey(p Peer) string {
	if p.Principal != "" {
		return p.Principal
	}
	if v.User != nil {
		return v.User.Principal
	}
	return cmp.Or(p.Addr, "plaintext")
}

// Take takes a token from l's bucket key; without one it counts the
// refusal and returns the 429 naming ref.
func (c *Chain) Take(l *ratelimit.Limiter, key, ref string, now time.Time) *Refusal {
	ok, wait := l.Allow(key, now)
	if ok {
		return nil
	}
	c.refused(ReasonRateLimited)
	secs := int((wait + time.Second - 1) / time.Second)
	return &Refusal{Code: http.StatusTooManyRequests, Msg: "trellis: rate limited by " + ref + "\n", RetryAfter: max(secs, 1)}
}

// ReasonInvalidToken is the Recorder reason of a refused end-user token
// (401).
const ReasonInvalidToken = "invalid_token"

// authenticate verifies the end user's token when JWTAuthentications
// select the workload: a token that fails is 401 with a challenge; a
// missing one passes (policies requiring a request principal deny it); a
// valid one gives the request its principal and claims, and the app the
// forwarded claim headers (the screen already removed the caller's own).
func authenticate(c *Chain, r View, _ Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	a := snap.Authn
	if a == nil {
		return true
	}
	user, err := a.AuthenticateValues(context.Background(), r.Values)
	if err != nil {
		c.refused(ReasonInvalidToken)
		return v.refuse(&Refusal{Code: http.StatusUnauthorized, Msg: "trellis: invalid token: " + err.Error() + "\n", Challenge: jwtauthn.WWWAuthenticate(err)})
	}
	if user != nil {
		a.Forward(r, user)
		v.User = user
	}
	return true
}

// authorize asks the Authorizer and records its decision; a denial is 403
// naming the policy unless the mesh hides it.
func authorize(c *Chain, r View, p Peer, snap *meshconfig.Snapshot, v *Verdict) bool {
	h, get := r.Header()
	v.authz = Request{
		Source: p.ID, Principal: p.Principal, Protocol: c.Protocol,
		Method: r.Method(), Path: v.Path, Host: r.Host(), Header: h, GetHeader: get,
	}
	if v.User != nil {
		v.authz.RequestPrincipal, v.authz.Claim = v.User.Principal, v.User.Values
	}
	dec := c.Authorizer.Authorize(snap, &v.authz)
	v.authz = Request{}
	if c.Recorder != nil {
		c.Recorder.Decided(dec)
	}
	v.Authorized, v.Decision = true, dec
	if dec.Allow {
		return true
	}
	if log := cmp.Or(c.Log, slog.Default()); log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("request denied", "source", p.Principal, "method", r.Method(), "path", v.Path, "policy", dec.Policy, "reason", dec.Reason)
	}
	rf := &Refusal{Code: http.StatusForbidden, Msg: "RBAC: access denied\n"}
	if dec.Policy != "" && !snap.HidePolicy {
		rf.DeniedBy = dec.Policy
	}
	return v.refuse(rf)
}

// screenField decides one caller-supplied field: refused (a framing
// look-alike), dropped (X-Forwarded-Client-Cert in any spelling, or on the
// strip list), or kept.
func screenField(name string, strip *meshconfig.HeaderStrip) (keep bool, rf *Refusal) {
	if rf := checkFieldName(name); rf != nil {
		return false, rf
	}
	return !isXFCC(name) && !strip.Match(name), nil
}
