package extauthz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Request is what a check tells the provider about one HTTP request.
type Request struct {
	// Source and Destination are the caller's and the called workload's
	// SPIFFE IDs; Source is "" for a plaintext caller.
	Source, Destination string
	Method              string
	// Path is the canonical path the local policies matched; Query the
	// raw query, without '?'.
	Path, Query string
	Host        string
	// Protocol is "HTTP/1.1", "HTTP/1.0" or "HTTP/2".
	Protocol string
	// Header returns a request header's value ("" when absent). Only the
	// provider's includeRequestHeadersInCheck are looked up.
	Header func(name string) string
	// RequestPrincipal is the end user's verified token's
	// "ISSUER/SUBJECT", "" without one.
	RequestPrincipal string
}

// Header is one header field of an answer.
type Header struct{ Name, Value string }

// Result is a provider's answer, or what its failure means.
type Result struct {
	// Allow: the provider allowed the request, or could not answer and
	// fails open.
	Allow bool
	// Upstream are the OK answer's headers to set on the request, only
	// those the provider's headersToUpstreamOnAllow name.
	Upstream []Header
	// Status (403 when the answer has none), Body and Downstream (only
	// the headers the provider's headersToDownstreamOnDeny name) make up
	// a denial's answer.
	Status     int
	Body       string
	Downstream []Header
	// Err is why the provider could not answer (unreachable, timeout, an
	// RPC error); nil when it answered.
	Err error
}

// MetadataNamespace is the filter_metadata key of the CheckRequest's
// metadata_context under which the end user's principal is sent
// ("request.auth.principal"), when the request has one.
const MetadataNamespace = "trellis.authn"

// checkRequest builds the CheckRequest for req as Envoy's ext_authz
// filter would: peers by principal, the HTTP request's method, path
// (with the query), host and protocol, and a headers map with the
// pseudo-headers and the included headers, lower case, several values
// joined with ','.
func checkRequest(p *meshconfig.ExtAuthzProvider, req *Request) *authv3.CheckRequest {
	path := req.Path
	if req.Query != "" {
		path += "?" + req.Query
	}
	headers := make(map[string]string, 3+len(p.IncludeHeaders))
	headers[":method"], headers[":path"], headers[":authority"] = req.Method, path, req.Host
	if req.Header != nil {
		for _, name := range p.IncludeHeaders {
			if v := req.Header(http.CanonicalHeaderKey(name)); v != "" {
				headers[name] = v
			}
		}
	}
	attrs := &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: req.Source},
		Destination: &authv3.AttributeContext_Peer{Principal: req.Destination},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Method: req.Method, Path: path, Host: req.Host, Scheme: "http",
				Protocol: req.Protocol, Headers: headers, Query: req.Query,
			},
		},
	}
	if req.RequestPrincipal != "" {
		attrs.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			MetadataNamespace: {Fields: map[string]*structpb.Value{"request.auth.principal": structpb.NewStringValue(req.RequestPrincipal)}},
		}}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

// result reads an answer: status OK allows (with the OK answer's
// headers that the provider passes upstream), any other status denies
// (with the denied answer's status, body and the headers it passes
// downstream).
func result(p *meshconfig.ExtAuthzProvider, resp *authv3.CheckResponse) Result {
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		r := Result{Allow: true}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			r.Upstream = appendListed(r.Upstream, p.UpstreamHeaders, h.GetHeader())
		}
		return r
	}
	d := resp.GetDeniedResponse()
	r := Result{Status: int(d.GetStatus().GetCode()), Body: d.GetBody()}
	if r.Status < 100 || r.Status > 599 {
		r.Status = http.StatusForbidden
	}
	for _, h := range d.GetHeaders() {
		r.Downstream = appendListed(r.Downstream, p.DownstreamHeaders, h.GetHeader())
	}
	return r
}

// appendListed appends h when names (lower case) lists its name.
func appendListed(out []Header, names []string, h *corev3.HeaderValue) []Header {
	if h == nil {
		return out
	}
	name := strings.ToLower(h.GetKey())
	for _, n := range names {
		if n == name {
			v := h.GetValue()
			if v == "" {
				v = string(h.GetRawValue())
			}
			return append(out, Header{Name: name, Value: v})
		}
	}
	return out
}

// ErrUnknownProvider is the failure of a check naming a provider the
// Mesh does not define.
var ErrUnknownProvider = errors.New("no such extension provider in the Mesh (spec.extensionProviders)")

// failed is the Result of a check the provider did not answer: denied
// (fail closed) unless the provider fails open.
func failed(p *meshconfig.ExtAuthzProvider, err error) Result {
	if p != nil && p.FailOpen {
		return Result{Allow: true, Err: err}
	}
	return Result{Status: http.StatusForbidden, Err: err}
}

func checkError(name string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("extauthz check %s: timed out: %w", name, err)
	}
	return fmt.Errorf("extauthz check %s: %w", name, err)
}
