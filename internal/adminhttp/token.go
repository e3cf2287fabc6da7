package adminhttp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellismesh/trellis/internal/atomicfile"
)

// TokenFile is the admin token's file name in a data dir.
const TokenFile = "admin.token"

// Token holds the SHA-256 of the admin bearer token, so comparison is
// constant-time regardless of the presented token's length.
type Token struct{ sum [32]byte }

// Matches reports whether presented is the token, in constant time.
func (t Token) Matches(presented string) bool {
	s := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(s[:], t.sum[:]) == 1
}

// LoadOrCreate reads DIR/admin.token, creating it at first start with 256
// random bits (hex), mode 0600.
func LoadOrCreate(dir string) (Token, error) {
	path := filepath.Join(dir, TokenFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(data))
		if len(tok) < 32 {
			return Token{}, fmt.Errorf("admin token %s: too short (%d characters); delete it to have a new one generated", path, len(tok))
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return Token{}, fmt.Errorf("admin token %s: %w", path, err)
		}
		return Token{sum: sha256.Sum256([]byte(tok))}, nil
	case errors.Is(err, os.ErrNotExist):
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return Token{}, fmt.Errorf("admin token: %w", err)
		}
		tok := hex.EncodeToString(raw[:])
		if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			return Token{}, fmt.Errorf("admin token: %w", err)
		}
		return Token{sum: sha256.Sum256([]byte(tok))}, nil
	default:
		return Token{}, fmt.Errorf("admin token: %w", err)
	}
}

// Require answers 401 unless the request carries the bearer token. Put it
// before routing, so unknown paths reveal nothing. who names the server
// in the hint ("control plane", "collector").
func (t Token) Require(who string, next http.Handler) http.Handler {
	msg := errors.New("unauthorized: send Authorization: Bearer <token> with the token from the " + who + "'s DATA_DIR/admin.token")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := BearerToken(r.Header.Get("Authorization"))
		if !ok || !t.Matches(tok) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="trellis"`)
			WriteError(w, http.StatusUnauthorized, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// BearerToken returns the credentials of an Authorization header with the
// Bearer scheme. Auth schemes are case-insensitive (RFC 7235 section 2.1):
// "bearer" and "BEARER" are Bearer too.
func BearerToken(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}
