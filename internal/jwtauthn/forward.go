package jwtauthn

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Prepare sets up the request headers the app gets: every claim header
// any issuer forwards is removed first (a caller cannot forge one), then
// r's issuer's claims are set, and the token is removed from where it was
// found unless the issuer forwards it. r may be nil (no token).
func (a *Authenticator) Prepare(h http.Header, r *Result) {
	for _, is := range a.issuers {
		for _, name := range is.cfg.ForwardClaims {
			h.Del(name)
		}
	}
	if r == nil {
		return
	}
	for _, is := range a.issuers {
		if is.cfg.Issuer != r.Issuer {
			continue
		}
		for claim, name := range is.cfg.ForwardClaims {
			if v, ok := claimString(r.Claims[claim]); ok {
				h.Set(name, v)
			}
		}
		if !is.cfg.ForwardOriginalToken {
			if r.source.header != "" {
				h.Del(r.source.header)
			}
			if r.source.cookie != "" {
				dropCookie(h, r.source.cookie)
			}
		}
	}
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
func dropCookie(h http.Header, name string) {
	var keep []string
	for _, line := range h.Values("Cookie") {
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
	h.Del("Cookie")
	for _, k := range keep {
		h.Add("Cookie", k)
	}
}

// WWWAuthenticate is the challenge of a 401 for err (RFC 6750): the
// error is invalid_token with a description that names what failed.
func WWWAuthenticate(err error) string {
	desc := strings.NewReplacer(`"`, "'", "\\", "/").Replace(err.Error())
	return fmt.Sprintf(`Bearer realm="trellis", error="invalid_token", error_description="%s"`, desc)
}
