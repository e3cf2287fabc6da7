// Package istioimport converts Istio security resources into Trellis
// resources: security.istio.io AuthorizationPolicy into AuthorizationPolicy,
// and a mesh-wide PeerAuthentication into the Mesh's mTLS mode. Whatever has
// no Trellis equivalent is reported by field (Dropped) and left out in the
// way that keeps the output on the safe side: an ALLOW policy never allows
// more than its Istio original, a DENY policy never denies less. Every object
// returned passes resource.Validate.
//
// The package reads Istio YAML with its own walk over generic values, so it
// depends on no Istio module. The CLI (trellis import istio) imports it.
package istioimport

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/resource"
)

// Defaults of Options' zero values.
const (
	DefaultIstioTrustDomain = "cluster.local"
	DefaultRootNamespace    = "istio-system"
)

// meshWideNamespace is the Trellis namespace whose policies without a
// selector protect every workload of the mesh, as policies of Istio's root
// namespace do.
const meshWideNamespace = "trellis-system"

// Options configures a conversion.
type Options struct {
	// TrustDomain is the Trellis mesh's trust domain: Istio principals
	// (cluster.local/ns/X/sa/Y) become spiffe://TrustDomain/ns/X/sa/Y.
	// Required.
	TrustDomain string
	// IstioTrustDomain is the trust domain of the Istio principals;
	// DefaultIstioTrustDomain when empty. Principals of other trust
	// domains are not converted.
	IstioTrustDomain string
	// RootNamespace is Istio's root namespace, whose policies without a
	// selector apply to the whole mesh; DefaultRootNamespace when empty.
	RootNamespace string
}

// File is one input: its name, for messages, and its contents (YAML
// documents or JSON values, as trellis apply reads them).
type File struct {
	Name string
	Data []byte
}

// Dropped is one part of the input that was not converted.
type Dropped struct {
	Source   string // the file's name, or name#N for a document without kind and name
	Resource string // "AuthorizationPolicy shop/name"; empty for a document that is no resource
	Field    string // "spec.rules[0].from[0].source.ipBlocks"; empty for the whole resource
	Reason   string // why, then in parentheses what the output does instead
}

// String formats d as one line:
//
//	istio.yaml: AuthorizationPolicy shop/x: spec.rules[0].from[0].source.ipBlocks: not converted: ...
func (d Dropped) String() string {
	var b strings.Builder
	b.WriteString(d.Source)
	for _, s := range []string{d.Resource, d.Field} {
		if s != "" {
			b.WriteString(": ")
			b.WriteString(s)
		}
	}
	b.WriteString(": not converted: ")
	b.WriteString(d.Reason)
	return b.String()
}

// Result is what Convert made of its input.
type Result struct {
	// Objects are the converted resources in input order, each valid
	// (resource.Validate passes) but not in Validate's canonical form:
	// defaults are left out as a person would write them.
	Objects []resource.Object
	// Dropped lists every field or resource not converted, in input order.
	Dropped []Dropped
}

// Convert converts the Istio resources in files. It fails only when the
// options are bad or a file does not parse as YAML or JSON (then it
// converts nothing); everything else it cannot convert is in Dropped.
func Convert(opts Options, files ...File) (*Result, error) {
	if opts.TrustDomain == "" {
		return nil, errors.New("istioimport.Convert: no trust domain")
	}
	if _, err := spiffeid.TrustDomainFromString(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("istioimport.Convert: trust domain %q: %w", opts.TrustDomain, err)
	}
	if opts.IstioTrustDomain == "" {
		opts.IstioTrustDomain = DefaultIstioTrustDomain
	}
	if opts.RootNamespace == "" {
		opts.RootNamespace = DefaultRootNamespace
	}
	c := &converter{opts: opts}
	var docs []*document
	for _, f := range files {
		values, err := resource.Documents(f.Data, f.Name)
		if err != nil {
			return nil, fmt.Errorf("istioimport.Convert: %w", err)
		}
		for i, v := range values {
			docs = append(docs, c.documents(f.Name, strconv.Itoa(i+1), v)...)
		}
	}
	// The mesh-wide mode first: whether a namespace's mode loses anything
	// depends on it. The first mesh-wide PeerAuthentication sets it.
	for _, d := range docs {
		if d.bad == "" && d.kind == kindPeerAuthentication && d.istio && d.meshWide(c.opts.RootNamespace) {
			if mode, _ := peerMode("", d.spec["mtls"]); mode != "" && mode != "DISABLE" {
				c.meshMode, c.meshFrom = meshMode(mode), d
				break
			}
		}
	}
	for _, d := range docs {
		switch {
		case d.bad != "":
			c.dropResource(d, "", d.bad)
		case !d.istio:
			c.dropResource(d, "apiVersion", fmt.Sprintf("%s is not an Istio security API (security.istio.io)", quote(d.apiVersion)))
		case d.kind == kindAuthorizationPolicy:
			c.authorizationPolicy(d)
		case d.kind == kindPeerAuthentication:
			if d.meshWide(c.opts.RootNamespace) {
				c.meshPeerAuthentication(d)
			} else {
				c.peerAuthentication(d)
			}
		case d.kind == "RequestAuthentication":
			c.dropResource(d, "kind", "Trellis does not authenticate end users (JWT); it authorizes workload identities")
		default:
			c.dropResource(d, "kind", fmt.Sprintf("kind %s: only AuthorizationPolicy and PeerAuthentication convert", quote(d.kind)))
		}
	}
	return &Result{Objects: c.out, Dropped: c.dropped}, nil
}

const (
	kindAuthorizationPolicy = "AuthorizationPolicy"
	kindPeerAuthentication  = "PeerAuthentication"
)

// document is one input resource.
type document struct {
	source     string // file name
	n          string // document number in the file, "3" or "3.items[1]"
	apiVersion string
	kind       string
	istio      bool // apiVersion is security.istio.io/*
	name, ns   string
	spec       map[string]any
	bad        string // why the document is no resource, if it is not
}

func (d *document) ref() string {
	if d.kind == "" && d.name == "" {
		return ""
	}
	return d.kind + " " + d.ns + "/" + d.name
}

// meshWide reports whether d, a PeerAuthentication, sets the mode of the
// whole mesh: it is in the root namespace and selects no workload.
func (d *document) meshWide(root string) bool {
	sel, _ := d.spec["selector"].(map[string]any)
	labels, _ := sel["matchLabels"].(map[string]any)
	return d.ns == root && len(labels) == 0
}

// documents turns one parsed document into input resources: one, or the
// items of a List.
func (c *converter) documents(source, n string, v any) []*document {
	d := &document{source: source, n: n}
	m, ok := v.(map[string]any)
	if !ok {
		d.bad = "the document is not a mapping with apiVersion, kind, metadata and spec"
		return []*document{d}
	}
	d.apiVersion, _ = m["apiVersion"].(string)
	d.kind, _ = m["kind"].(string)
	if d.kind == "List" {
		items, _ := m["items"].([]any)
		var out []*document
		for i, item := range items {
			out = append(out, c.documents(source, fmt.Sprintf("%s.items[%d]", n, i), item)...)
		}
		return out
	}
	d.istio = strings.HasPrefix(d.apiVersion, "security.istio.io/")
	md, _ := m["metadata"].(map[string]any)
	d.name, _ = md["name"].(string)
	d.ns, _ = md["namespace"].(string)
	if d.ns == "" {
		d.ns = resource.DefaultNamespace
	}
	switch spec := m["spec"].(type) {
	case map[string]any:
		d.spec = spec
	case nil:
		d.spec = map[string]any{}
	default:
		d.bad = "spec is not a mapping"
	}
	if d.bad == "" && d.istio && d.name == "" {
		d.bad = "metadata.name is missing"
	}
	return []*document{d}
}

// converter holds the state of one Convert call.
type converter struct {
	opts     Options
	out      []resource.Object
	dropped  []Dropped
	meshMode string    // the Mesh mTLS mode converted from a mesh-wide PeerAuthentication, if any
	meshFrom *document // that PeerAuthentication
}

// problem is one field that does not convert.
type problem struct {
	field, reason string
	consequence   string // what the output does instead; set by whoever decides it
}

// drop reports ps, with consequence for those that have none.
func (c *converter) drop(d *document, ps []problem, consequence string) {
	for _, p := range ps {
		reason, cons := p.reason, p.consequence
		if cons == "" {
			cons = consequence
		}
		if cons != "" {
			reason += " (" + cons + ")"
		}
		c.dropped = append(c.dropped, Dropped{Source: d.source, Resource: d.ref(), Field: p.field, Reason: reason})
	}
}

// dropResource records that all of d is left out.
func (c *converter) dropResource(d *document, field, reason string) {
	src := d.source
	if d.ref() == "" {
		src += "#" + d.n
	}
	c.dropped = append(c.dropped, Dropped{Source: src, Resource: d.ref(), Field: field, Reason: reason + " (the resource is left out)"})
}

// emit validates o and adds it to the output, or drops d if o is invalid,
// which can happen only through d's metadata: every spec field was
// checked on its own.
func (c *converter) emit(d *document, o resource.Object) {
	check := o
	if err := resource.Validate(&check); err != nil {
		c.dropResource(d, "", validatorMessage(err))
		return
	}
	c.out = append(c.out, o)
}

func quote(s string) string { return strconv.Quote(s) }

// validatorMessage is the field messages of a validation error, without
// the source and resource the probe objects have.
func validatorMessage(err error) string {
	var ve *resource.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	msgs := make([]string, 0, len(ve.Errors))
	for _, fe := range ve.Errors {
		if fe.Field != "" {
			msgs = append(msgs, fe.Field+": "+fe.Message)
		} else {
			msgs = append(msgs, fe.Message)
		}
	}
	return strings.Join(msgs, "; ")
}

// stringList reads a list of strings.
func stringList(v any) ([]string, string) {
	items, ok := v.([]any)
	if !ok {
		return nil, "not a list of strings"
	}
	out := make([]string, len(items))
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, fmt.Sprintf("entry %d is not a string", i)
		}
		out[i] = s
	}
	return out, ""
}

// stringMap reads a mapping of strings to strings.
func stringMap(v any) (map[string]string, string) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, "not a mapping of strings"
	}
	out := make(map[string]string, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s, ok := m[k].(string)
		if !ok {
			return nil, fmt.Sprintf("the value of %s is not a string", quote(k))
		}
		out[k] = s
	}
	return out, ""
}

func marshal(v any) json.RawMessage {
	data, err := json.Marshal(v)
	if err != nil {
		panic("istioimport: marshaling a spec: " + err.Error())
	}
	return data
}
