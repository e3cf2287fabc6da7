package admission

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// The inbound checks a request passes before authorization, on the fast
// path and on the net/http path alike: whatever could make the app read a
// request differently from the proxy (and from the policy that allowed
// it) is refused with 400, and headers only the proxy may set are
// removed.

// Refusal is a request the inbound answers itself, before the app: 400
// from the screen, 403 from mTLS or authorization, 503 without a
// configuration (and from the data path's app gate).
type Refusal struct {
	Code int
	// Msg is the plain-text body, ending in a newline.
	Msg string
	// Close: the connection closes after the answer.
	Close bool
	// DeniedBy names the denying policy (X-Trellis-Denied-By) on a 403.
	DeniedBy string
	// Challenge is the WWW-Authenticate value of a 401 (an invalid
	// end-user token).
	Challenge string
	// RetryAfter is the Retry-After of a 429, in seconds.
	RetryAfter int
	// Header are more fields of the answer (an external authorization
	// provider's, on its denial).
	Header []Field
}

// Field is one header field.
type Field struct{ Name, Value string }

// BadRequest is the screen's 400 with msg (without "trellis: " and the
// newline); the connection closes after it.
func BadRequest(msg string) *Refusal {
	return &Refusal{Code: http.StatusBadRequest, Msg: "trellis: " + msg + "\n", Close: true}
}

// XFCCHeader is the Envoy convention for telling the app who called:
// only the proxy sets it.
const XFCCHeader = "X-Forwarded-Client-Cert"

// standardMethods are the methods whose other spellings are refused.
var standardMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// checkMethod refuses a standard method in another case ("get"): methods
// are case-sensitive and policies name them in upper case, but some
// frameworks fold them, so "get" would reach a GET handler without
// matching a GET rule (or a DENY of it).
func checkMethod(m string) *Refusal {
	for _, s := range standardMethods {
		if len(m) == len(s) && m != s && strings.EqualFold(m, s) {
			return BadRequest("method " + m + " is not " + s + ": methods are case-sensitive; send " + s)
		}
	}
	return nil
}

// framingNames are the framing and hop-by-hop fields that a look-alike
// with '_' for '-' could stand in for: CGI, WSGI and many frameworks fold
// '_' and '-' together, so "Transfer_Encoding: chunked" next to the
// proxy's Content-Length is a smuggled request to them.
var framingNames = [...]string{"transfer-encoding", "content-length", "connection", "keep-alive", "upgrade", "te", "trailer"}

// checkFieldName refuses a field name that becomes a framing or
// hop-by-hop field when '_' is read as '-'.
func checkFieldName(name string) *Refusal {
	if strings.IndexByte(name, '_') < 0 {
		return nil
	}
	folded := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	bad := strings.HasPrefix(folded, "proxy-")
	for _, f := range framingNames {
		bad = bad || folded == f
	}
	if bad {
		return BadRequest("header " + name + " is refused: with '_' read as '-' it is the framing or hop-by-hop field " + folded)
	}
	return nil
}

// DefaultAllowedUpgrades are the protocols an HTTP/1.1 Upgrade may switch
// to when the Mesh lists none (Mesh spec.http.allowedUpgrades).
var DefaultAllowedUpgrades = []string{"websocket"}

// checkUpgrade decides an HTTP/1.x request's Upgrade: "" with nil means no
// upgrade (HTTP/1.0 upgrades are ignored, as RFC 9110 7.8 says); a
// protocol to forward; or a refusal: h2c (the mesh carries HTTP/2 by prior
// knowledge only), a protocol the mesh does not allow, or an upgrade on a
// method other than GET.
func checkUpgrade(r View, allowed []string) (string, *Refusal) {
	up := r.Values("Upgrade")
	if len(up) == 0 || !r.HTTP11() {
		return "", nil
	}
	if c := r.Values("Connection"); !HasToken(c, "upgrade") {
		return "", nil // Upgrade without Connection: upgrade is not one; it is dropped as hop-by-hop
	}
	if len(up) != 1 || strings.Contains(up[0], ",") {
		return "", BadRequest("Upgrade must name exactly one protocol")
	}
	proto := strings.TrimSpace(up[0])
	name, _, _ := strings.Cut(proto, "/")
	if strings.EqualFold(name, "h2c") {
		return "", BadRequest("h2c upgrade is refused: the mesh speaks HTTP/2 to apps by prior knowledge (service protocol http2 or grpc)")
	}
	if allowed == nil {
		allowed = DefaultAllowedUpgrades
	}
	for _, a := range allowed {
		if strings.EqualFold(name, a) {
			if m := r.Method(); m != http.MethodGet {
				return "", BadRequest("an Upgrade to " + name + " must be a GET, not " + m)
			}
			return proto, nil
		}
	}
	return "", BadRequest("Upgrade to " + strings.ToLower(name) + " is not allowed in this mesh (Mesh spec.http.allowedUpgrades: " + strings.Join(allowed, ", ") + ")")
}

// isXFCC: the client-cert header or a look-alike that frameworks fold
// onto it (x_forwarded_client_cert).
func isXFCC(name string) bool {
	return len(name) == len(XFCCHeader) && meshconfig.FoldedEqual(name, "x-forwarded-client-cert")
}

// HasToken reports whether a comma-separated header lists token, in any
// case.
func HasToken(values []string, token string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(tok), token) {
				return true
			}
		}
	}
	return false
}

// removeXFCCTokens removes Connection tokens naming the client-cert
// header, which would make the hop-by-hop pass delete the proxy's own
// header after it is set.
func removeXFCCTokens(h http.Header) {
	conn, ok := h["Connection"]
	if !ok {
		return
	}
	kept := conn[:0:0]
	for _, v := range conn {
		var tokens []string
		for _, tok := range strings.Split(v, ",") {
			if !strings.EqualFold(strings.TrimSpace(tok), XFCCHeader) {
				tokens = append(tokens, tok)
			}
		}
		if len(tokens) > 0 {
			kept = append(kept, strings.Join(tokens, ","))
		}
	}
	if len(kept) == 0 {
		delete(h, "Connection")
	} else {
		h["Connection"] = kept
	}
}
