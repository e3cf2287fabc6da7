package adminapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/resource"
)

// ErrUnreachable wraps transport failures: the server could not be reached
// or did not answer.
var ErrUnreachable = errors.New("control plane unreachable")

// StatusError is a non-2xx answer from the server.
type StatusError struct {
	Status int
	Body   ErrorBody
}

func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString(e.Body.Error)
	if b.Len() == 0 {
		b.WriteString(http.StatusText(e.Status))
	}
	for _, d := range e.Body.Details {
		b.WriteString("\n  ")
		if d.Resource != "" {
			b.WriteString(d.Resource + ": ")
		}
		if d.Field != "" {
			b.WriteString(d.Field + ": ")
		}
		b.WriteString(d.Message)
	}
	return b.String()
}

// IsUserError reports whether err is the caller's fault (a 4xx answer).
func IsUserError(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status >= 400 && se.Status < 500
}

// Client talks to one control plane's admin API. The zero value is not
// usable; set BaseURL and Token.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// NewClient builds a client. caFile, when set, is a PEM bundle trusted for
// an https BaseURL (typically the control plane's ca.crt).
func NewClient(baseURL, token, caFile string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api url %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("ca file %s: no PEM certificates", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return fmt.Errorf("%w at %s: %v (pass --ca-file with the control plane's DATA_DIR/ca.crt)", ErrUnreachable, c.BaseURL, err)
		}
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.BaseURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w at %s: reading answer: %v", ErrUnreachable, c.BaseURL, err)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode}
		if json.Unmarshal(data, &se.Body) != nil || se.Body.Error == "" {
			se.Body.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
			// Go's TLS server answers plain HTTP with this text.
			if strings.Contains(string(data), "HTTP request to an HTTPS server") {
				se.Body.Error += " (this admin API serves TLS: use an https:// --api URL with --ca-file DATA_DIR/ca.crt)"
			}
		}
		return se
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Apply stores objects atomically (or, with dryRun, reports what would happen).
func (c *Client) Apply(ctx context.Context, objs []resource.Object, dryRun bool) (ApplyResponse, error) {
	var out ApplyResponse
	err := c.do(ctx, http.MethodPost, PathApply, ApplyRequest{Objects: objs, DryRun: dryRun}, &out)
	return out, err
}

// ResourcePath is the API path of one resource, or of a kind's collection
// when name is empty.
func ResourcePath(kind resource.KindInfo, namespace, name string) string {
	p := PathResource + "/" + kind.Plural
	if kind.Namespaced && namespace != "" {
		p += "/" + url.PathEscape(namespace)
	}
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// List lists a kind's resources; namespace "" lists all namespaces.
func (c *Client) List(ctx context.Context, kind resource.KindInfo, namespace string) ([]resource.Object, error) {
	var out ListResponse
	err := c.do(ctx, http.MethodGet, ResourcePath(kind, namespace, ""), nil, &out)
	return out.Items, err
}

// Get fetches one resource.
func (c *Client) Get(ctx context.Context, kind resource.KindInfo, namespace, name string) (resource.Object, error) {
	var out resource.Object
	err := c.do(ctx, http.MethodGet, ResourcePath(kind, namespace, name), nil, &out)
	return out, err
}

// Delete deletes one resource.
func (c *Client) Delete(ctx context.Context, kind resource.KindInfo, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, ResourcePath(kind, namespace, name), nil, nil)
}

// CreateToken issues a join token.
func (c *Client) CreateToken(ctx context.Context, req CreateTokenRequest) (CreateTokenResponse, error) {
	var out CreateTokenResponse
	err := c.do(ctx, http.MethodPost, PathTokens, req, &out)
	return out, err
}

// RevokeToken revokes a join token by ID.
func (c *Client) RevokeToken(ctx context.Context, id string) (TokenInfo, error) {
	var out TokenInfo
	err := c.do(ctx, http.MethodDelete, PathTokens+"/"+url.PathEscape(id), nil, &out)
	return out, err
}

// ListTokens lists issued join tokens.
func (c *Client) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	var out TokenListResponse
	err := c.do(ctx, http.MethodGet, PathTokens, nil, &out)
	return out.Items, err
}

// CreateAdminToken creates an admin token; the answer holds its secret.
func (c *Client) CreateAdminToken(ctx context.Context, req CreateAdminTokenRequest) (CreateAdminTokenResponse, error) {
	var out CreateAdminTokenResponse
	err := c.do(ctx, http.MethodPost, PathAdminTokens, req, &out)
	return out, err
}

// ListAdminTokens lists admin tokens (never their secrets).
func (c *Client) ListAdminTokens(ctx context.Context) ([]AdminTokenInfo, error) {
	var out AdminTokenListResponse
	err := c.do(ctx, http.MethodGet, PathAdminTokens, nil, &out)
	return out.Items, err
}

// RevokeAdminToken revokes an admin token by name.
func (c *Client) RevokeAdminToken(ctx context.Context, name string) (AdminTokenInfo, error) {
	var out AdminTokenInfo
	err := c.do(ctx, http.MethodDelete, PathAdminTokens+"/"+url.PathEscape(name), nil, &out)
	return out, err
}

// namespaceQuery is "?namespace=NS", or "" for all namespaces.
func namespaceQuery(namespace string) string {
	if namespace == "" {
		return ""
	}
	return "?" + url.Values{"namespace": {namespace}}.Encode()
}

// ListProxies lists the proxies the control plane knows with their sync
// state; namespace "" lists all namespaces.
func (c *Client) ListProxies(ctx context.Context, namespace string) ([]ProxyInfo, error) {
	var out ProxyListResponse
	err := c.do(ctx, http.MethodGet, PathProxies+namespaceQuery(namespace), nil, &out)
	return out.Items, err
}

// GetProxy fetches one proxy instance in detail: its state, and its
// desired and acknowledged configs with their diff.
func (c *Client) GetProxy(ctx context.Context, instance string) (ProxyStatus, error) {
	var out ProxyStatus
	err := c.do(ctx, http.MethodGet, PathProxies+"/"+url.PathEscape(instance), nil, &out)
	return out, err
}

// ListServices lists mesh services with their endpoint counts; namespace
// "" lists all namespaces.
func (c *Client) ListServices(ctx context.Context, namespace string) ([]ServiceInfo, error) {
	var out ServiceListResponse
	err := c.do(ctx, http.MethodGet, PathServices+namespaceQuery(namespace), nil, &out)
	return out.Items, err
}
