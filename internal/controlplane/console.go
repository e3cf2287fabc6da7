package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/console"
)

// consoleHandler is the web console at /ui (docs/console.md). Its pages
// call api, the admin API's routes, in process with the session's
// principal: the same handlers and permission checks as the CLI's calls.
func (s *Server) consoleHandler(api http.Handler) http.Handler {
	c, err := console.New(console.Config{
		API:          api,
		Authenticate: s.authenticateToken,
		Revalidate:   s.revalidatePrincipal,
		SessionTTL:   s.cfg.ConsoleSessionTTL,
		Now:          s.cfg.Clock.Now,
		Logger:       s.log.With("component", "console"),
		Audit: func(r *http.Request, p adminauth.Principal, kind string, attrs map[string]string) {
			s.audit.record(adminEvent(r.WithContext(adminauth.WithPrincipal(r.Context(), p)), kind, attrs))
		},
	})
	if err != nil {
		// The templates are embedded: a failure is a build mistake.
		panic(err)
	}
	s.console = c
	return c
}

// authenticateToken resolves an admin token as the admin API does: the
// bootstrap admin.token is root, else an admin token from the store.
func (s *Server) authenticateToken(ctx context.Context, secret string) (adminauth.Principal, error) {
	if secret == "" {
		return adminauth.Principal{}, errors.New("no token")
	}
	if s.adminToken.Matches(secret) {
		return adminauth.RootPrincipal(), nil
	}
	return s.adminTokens.Authenticate(ctx, secret)
}

// revalidatePrincipal fails once p's admin token is revoked or expired,
// so a console session ends with its token.
func (s *Server) revalidatePrincipal(ctx context.Context, p adminauth.Principal) error {
	if p.Name == adminauth.RootName && p.Role == adminauth.Root {
		return nil
	}
	info, err := s.adminTokens.Get(ctx, p.Name)
	if err != nil {
		return err
	}
	switch {
	case string(p.Role) != info.Role:
		return fmt.Errorf("admin token %q is another token now", p.Name)
	case info.RevokedAt != nil:
		return fmt.Errorf("admin token %q was revoked", p.Name)
	case !s.cfg.Clock.Now().Before(info.ExpiresAt):
		return fmt.Errorf("admin token %q expired", p.Name)
	}
	return nil
}

// ConsoleRoutes lists the console's pages and actions with their
// permissions, for tests and docs.
func (s *Server) ConsoleRoutes() []console.Route { return s.console.Routes() }
