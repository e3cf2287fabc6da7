package cli_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
)

var (
	jwtLine    = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`)
	createdMsg = regexp.MustCompile(`^token ([0-9a-f]+) for (spiffe://\S+), expires (\S+)\n$`)
)

// jwtClaims decodes the payload of a JWT without checking its signature.
func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q: got %d dot-separated parts, want 3", token, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("token payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("token payload: %v", err)
	}
	return claims
}

func TestTokenCreate(t *testing.T) {
	m := startMesh(t)
	for _, tc := range []struct {
		args         []string
		wantSPIFFEID string
		wantTTL      time.Duration
	}{
		{[]string{"--service", "web"}, "spiffe://trellis.local/ns/default/sa/web", 24 * time.Hour},
		{[]string{"--service", "web", "--namespace", "shop"}, "spiffe://trellis.local/ns/shop/sa/web", 24 * time.Hour},
		{[]string{"--service", "web", "--namespace", "shop", "--service-account", "web-sa", "--ttl", "30m"}, "spiffe://trellis.local/ns/shop/sa/web-sa", 30 * time.Minute},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"token", "create"}, tc.args...)...)
			if r.code != cli.ExitOK {
				t.Fatalf("got %v, want exit 0", r)
			}
			if !jwtLine.MatchString(r.stdout) {
				t.Fatalf("stdout %q: want only a JWT (three dot-separated base64url parts) and a newline", r.stdout)
			}
			token := strings.TrimSuffix(r.stdout, "\n")
			msg := createdMsg.FindStringSubmatch(r.stderr)
			if msg == nil {
				t.Fatalf("stderr %q: want %q", r.stderr, createdMsg)
			}
			id, spiffeID := msg[1], msg[2]
			if spiffeID != tc.wantSPIFFEID {
				t.Errorf("SPIFFE ID on stderr: got %s, want %s", spiffeID, tc.wantSPIFFEID)
			}
			expires, err := time.Parse(time.RFC3339, msg[3])
			if err != nil {
				t.Fatalf("expiry on stderr: %v", err)
			}
			if d := time.Until(expires); d < tc.wantTTL-time.Minute || d > tc.wantTTL {
				t.Errorf("expires in %s, want about %s", d, tc.wantTTL)
			}
			claims := jwtClaims(t, token)
			if claims["sub"] != tc.wantSPIFFEID || claims["jti"] != id {
				t.Errorf("token claims sub %v, jti %v: want %s, %s", claims["sub"], claims["jti"], tc.wantSPIFFEID, id)
			}

			r = m.run(t, "", "token", "list")
			if r.code != cli.ExitOK || !strings.HasPrefix(r.stdout, "ID ") {
				t.Fatalf("token list: got %v, want exit 0 and a table", r)
			}
			if !regexp.MustCompile(`(?m)^` + id + ` +` + regexp.QuoteMeta(spiffeID) + ` +\S+ +valid$`).MatchString(r.stdout) {
				t.Errorf("token list:\n%s\nwant a valid row for %s %s", r.stdout, id, spiffeID)
			}
			if strings.Contains(r.stdout, token) {
				t.Error("token list shows the token itself")
			}
		})
	}
}

func TestTokenJSON(t *testing.T) {
	m := startMesh(t)
	r := m.run(t, "", "token", "create", "--service", "cart", "-o", "json")
	if r.code != cli.ExitOK {
		t.Fatalf("got %v, want exit 0", r)
	}
	var resp adminapi.CreateTokenResponse
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("parse stdout: %v\n%s", err, r.stdout)
	}
	if resp.Info.Service != "cart" || resp.Info.ID == "" || !jwtLine.MatchString(resp.Token+"\n") {
		t.Errorf("got %+v, want a token for service cart with an ID", resp)
	}
}

func TestTokenRevoke(t *testing.T) {
	m := startMesh(t)
	r := m.run(t, "", "token", "create", "--service", "web", "--namespace", "shop")
	msg := createdMsg.FindStringSubmatch(r.stderr)
	if r.code != cli.ExitOK || msg == nil {
		t.Fatalf("token create: got %v", r)
	}
	id := msg[1]

	r = m.run(t, "", "token", "revoke", id)
	if want := "token " + id + " (spiffe://trellis.local/ns/shop/sa/web) revoked\n"; r.code != cli.ExitOK || r.stdout != want {
		t.Fatalf("token revoke: got %v\nwant exit 0, stdout %q", r, want)
	}
	tokens, err := m.client.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].ID != id || tokens[0].RevokedAt == nil {
		t.Errorf("stored tokens: got %+v, want %s revoked", tokens, id)
	}
	r = m.run(t, "", "token", "list")
	if !regexp.MustCompile(`(?m)^` + id + ` .* revoked$`).MatchString(r.stdout) {
		t.Errorf("token list:\n%s\nwant %s revoked", r.stdout, id)
	}
	// Revoking twice is not an error.
	if r = m.run(t, "", "token", "revoke", id); r.code != cli.ExitOK {
		t.Errorf("second revoke: got %v, want exit 0", r)
	}
}

func TestTokenErrors(t *testing.T) {
	m := startMesh(t)
	for _, tc := range []struct {
		args       []string
		wantStderr []string
	}{
		{[]string{"revoke", "0123456789abcdef0123456789abcdef"}, []string{`not found: token "0123456789abcdef0123456789abcdef"`}},
		{[]string{"revoke"}, []string{"want the token ID", "trellis token list"}},
		{[]string{"revoke", "a", "b"}, []string{"want the token ID"}},
		{[]string{"create"}, []string{"--service is required"}},
		{[]string{"create", "--namespace", "shop"}, []string{"--service is required"}},
		{[]string{"create", "--service", "web", "--ttl", "forever"}, []string{"ttl", `"forever" is not a duration`}},
		{[]string{"create", "--service", "Web"}, []string{"service", "must be a DNS label"}},
		{[]string{"create", "--service", "web", "-o", "yaml"}, []string{`-o "yaml": use token or json`}},
		{[]string{"create", "web"}, []string{"takes no arguments"}},
		{[]string{"list", "all"}, []string{"takes no arguments"}},
		{[]string{"craete"}, []string{`unknown subcommand "craete"`, `did you mean "create"?`}},
		{[]string{"frob"}, []string{`unknown subcommand "frob"`, "use create, list or revoke"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := m.run(t, "", append([]string{"token"}, tc.args...)...)
			if r.code != cli.ExitUser || r.stdout != "" {
				t.Errorf("got %v\nwant exit %d and no stdout", r, cli.ExitUser)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", r.stderr, want)
				}
			}
		})
	}
	tokens, err := m.client.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 0 {
		t.Errorf("failed commands issued %d tokens, want none", len(tokens))
	}
}
