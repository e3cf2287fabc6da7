package adminapi

import (
	"context"
	"net/http"
)

// Ready asks GET /readyz: nil when the server is ready (store readable,
// CA valid), a *StatusError (503) saying why not, or ErrUnreachable.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, PathReadyz, nil, nil)
}
