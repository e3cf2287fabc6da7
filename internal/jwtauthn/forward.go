package jwtauthn

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Editor is the request header access Forward needs: an http.Header
// (HeaderEditor) or the proxy's admission view of a request.
type Editor interface {
	Values(name string) []string
	SetHeader(name, value string)
	DelHeader(name string)
}

// HeaderEditor edits an http.Header.
type HeaderEditor http.Header

func (h HeaderEditor) Values(name string) []string  { return http.Header(h).Values(name) }
func (h HeaderEditor) SetHeader(name, value string) { http.Header(h).Set(name, value) }
func (h HeaderEditor) DelHeader(name string)        { http.Header(h).Del(name) }

// ClaimHeaders are the headers any issuer forwards claims in: a caller's
// own values of them must never reach the app (the proxy strips them
// before admission).
func (a *Authenticator) ClaimHeaders() []string {
	if a == nil {
		return nil
	}
	var out []string
	for _, is := range a.issuers {
		for _, name := range is.cfg.ForwardClaims {
			out = append(out, name)
		}
	}
	return out
}

// Prepare sets up the request headers the app gets: every claim header
// any issuer forwards is removed first (a caller cannot forge one), then
// r's issuer's claims are set, and the token is removed from where it was
// found unless the issuer forwards it. r may be nil (no token).
func (a *Authenticator) Prepare(h http.Header, r *Result) {
	for _, name := range a.ClaimHeaders() {
		h.Del(name)
	}
	a.Forward(HeaderEditor(h), r)
}

// Forward sets r's claims as headers and removes the token unless its
// issuer forwards it; nil r does nothing. The caller has removed any
// claim headers the request came with.
func (a *Authenticator) Forward(e Editor, r *Result) {
	if r == nil {
		return
	}
	for _, is := range a.issuers {
		if is.cfg.Issuer != r.Issuer {
			continue
		}
		for claim, name := range is.cfg.ForwardClaims {
			if v, ok := claimString(r.Claims[claim]); ok {
				e.SetHeader(name, v)
			}
		}
		if !is.cfg.ForwardOriginalToken {
			if r.source.header != "" {
				e.DelHeader(r.source.header)
			}
			if r.source.cookie != "" {
				dropCookie(e, r.source.cookie)
			}
		}
	}
}

// Values returns the values of a list claim, or the claim itself as one
// value (strings, numbers, booleans), for claim conditions; nil when
// absent or an object.
func (r *Result) Values(claim string) []string {
	switch x := r.Claims[claim].(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := claimString(e); ok {
				out = append(out, s)
			}
		}
		return out
	case nil:
		return nil
	default:
		if s, ok := claimString(x); ok {
			return []string{s}
		}
	}
	return nil
}

// claimString renders a claim for a header: strings as they are, numbers
// and booleans in JSON form, lists of those joined with ",". Objects are
// not forwarded. Control characters are never put in a header.
func claimString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		if strings.ContainsAny(x, "\r\n\x00") {
			return "", false
		}
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := claimString(e)
			if !ok || strings.Contains(s, ",") {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), true
	}
	return "", false
}

// dropCookie removes one cookie from the request's Cookie headers.
func dropCookie(e Editor, name string) {
	var keep []string
	for _, line := range e.Values("Cookie") {
		var parts []string
		for _, p := range strings.Split(line, ";") {
			if n, _, _ := strings.Cut(strings.TrimSpace(p), "="); n != name {
				parts = append(parts, strings.TrimSpace(p))
			}
		}
		if len(parts) > 0 {
			keep = append(keep, strings.Join(parts, "; "))
		}
	}
	e.DelHeader("Cookie")
	if len(keep) > 0 {
		e.SetHeader("Cookie", strings.Join(keep, "; "))
	}
}

// WWWAuthenticate is the challenge of a 401 for err (RFC 6750): the
// error is invalid_token with a description that names what failed.
func WWWAuthenticate(err error) string {
	desc := strings.NewReplacer(`"`, "'", "\\", "/").Replace(err.Error())
	return fmt.Sprintf(`Bearer realm="trellis", error="invalid_token", error_description="%s"`, desc)
}
