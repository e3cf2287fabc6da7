package console

import (
	"cmp"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminauth"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/cli/policycmd"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

// coverageSince is how far back the console looks at learned traffic,
// as trellis policy coverage does by default.
const coverageSince = 24 * time.Hour

var funcs = template.FuncMap{
	"pct": func(f *float64) string {
		if f == nil {
			return "–"
		}
		return strconv.FormatFloat(*f*100, 'f', 1, 64) + "%"
	},
	"ms": func(f *float64) string {
		if f == nil {
			return "–"
		}
		return strconv.FormatFloat(*f, 'f', 1, 64) + " ms"
	},
	"rate": func(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) + "/s" },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"until": func(now, t time.Time) string { return humanDuration(t.Sub(now)) },
	"join":  strings.Join,
	"list":  func(s ...string) []string { return s },
}

func humanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 48*time.Hour:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		s = d.Round(time.Second).String()
	}
	if neg {
		return s + " ago"
	}
	return "in " + s
}

// Outcomes of an edge, as the graph colours it.
const (
	outcomeAllowed = "allowed"
	outcomeAudited = "audited" // an audit-mode policy would deny some of it
	outcomeDenied  = "denied"
	outcomeUnknown = "unknown" // no learned requests to decide
)

// edgeView is an edge with what the live policies decide for its
// learned requests (trellis policy coverage).
type edgeView struct {
	adminapi.GraphEdge
	ID        string // source.ns->destination.ns
	Outcome   string
	AllowedBy []string
	DeniedBy  []string
	Coverage  *policycmd.EdgeCoverage
	Path      string // SVG path
	LabelX    float64
	LabelY    float64
}

func refString(r adminapi.ServiceRef) string { return r.Service + "." + r.Namespace }

func edgeID(e adminapi.GraphEdge) string {
	return refString(e.Source) + "->" + refString(e.Destination)
}

func outcomeOf(cov *policycmd.EdgeCoverage) string {
	switch {
	case cov == nil || cov.Requests == cov.Unknown:
		return outcomeUnknown
	case cov.Denied > 0:
		return outcomeDenied
	case cov.WouldDeny > 0:
		return outcomeAudited
	}
	return outcomeAllowed
}

type graphData struct {
	Graph    adminapi.Graph
	Nodes    []nodeView
	Edges    []edgeView
	Selected *edgeView
	Width    int
	Height   int
	Note     string
}

// graphPage draws the service graph: nodes layered left to right by call
// depth, edges coloured by what the live policies decide.
func (c *Console) graphPage(w http.ResponseWriter, r *http.Request, ss *session) {
	cl := c.client(r, ss)
	g, err := cl.Graph(r.Context(), 0)
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	d := graphData{Graph: g}
	covs, err := policycmd.Coverage(r.Context(), cl, "", coverageSince)
	byEdge := map[string]*policycmd.EdgeCoverage{}
	if err != nil {
		d.Note = "authorization outcomes unknown: " + err.Error()
	}
	for i := range covs {
		byEdge[covs[i].Source+"->"+covs[i].Target] = &covs[i]
	}
	for _, e := range g.Edges {
		ev := edgeView{GraphEdge: e, ID: edgeID(e), Coverage: byEdge[edgeID(e)]}
		ev.Outcome = outcomeOf(ev.Coverage)
		if ev.Coverage != nil {
			ev.AllowedBy = slices.Sorted(maps.Keys(ev.Coverage.AllowedBy))
			ev.DeniedBy = slices.Sorted(maps.Keys(ev.Coverage.DeniedBy))
		}
		d.Edges = append(d.Edges, ev)
	}
	d.Nodes, d.Width, d.Height = layout(g.Nodes, d.Edges)
	sel := r.URL.Query().Get("edge")
	for i := range d.Edges {
		if d.Edges[i].ID == sel {
			d.Selected = &d.Edges[i]
		}
	}
	c.render(w, r, ss, http.StatusOK, "graph", d)
}

type policyView struct {
	Object  resource.Object
	Ref     string
	Action  string
	Mode    string
	Allows  []string
	Denies  []string
	Summary string
}

type policiesData struct {
	Policies []policyView
	Note     string
	Check    *checkData
}

func (c *Console) policiesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	d, ok := c.policies(w, r, ss)
	if !ok {
		return
	}
	d.Check = &checkData{Input: policycmd.CheckInput{Method: "GET", Path: "/"}}
	c.render(w, r, ss, http.StatusOK, "policies", d)
}

func (c *Console) policies(w http.ResponseWriter, r *http.Request, ss *session) (*policiesData, bool) {
	cl := c.client(r, ss)
	kind, _ := resource.LookupKind(resource.KindAuthorizationPolicy)
	objs, err := cl.List(r.Context(), kind, "")
	if err != nil {
		c.apiError(w, r, ss, err)
		return nil, false
	}
	d := &policiesData{}
	var covs []policycmd.EdgeCoverage
	if err := adminauth.Authorize(ss.principal, adminauth.StatusRead, "", true); err != nil {
		d.Note = "edges not shown: " + err.Error()
	} else if covs, err = policycmd.Coverage(r.Context(), cl, "", coverageSince); err != nil {
		d.Note = "edges not shown: " + err.Error()
	}
	for _, o := range objs {
		ref := o.Metadata.Namespace + "/" + o.Metadata.Name
		pv := policyView{Object: o, Ref: ref}
		if spec, err := resource.AuthorizationPolicySpecOf(&o); err == nil {
			pv.Action = string(spec.Action)
			pv.Mode = string(spec.Enforcement)
		}
		for _, cv := range covs {
			if cv.AllowedBy[ref] > 0 {
				pv.Allows = append(pv.Allows, cv.Source+" → "+cv.Target)
			}
			if cv.DeniedBy[ref] > 0 {
				pv.Denies = append(pv.Denies, cv.Source+" → "+cv.Target)
			}
		}
		d.Policies = append(d.Policies, pv)
	}
	slices.SortFunc(d.Policies, func(a, b policyView) int { return cmp.Compare(a.Ref, b.Ref) })
	return d, true
}

type checkData struct {
	Input   policycmd.CheckInput
	Result  *analysis.Result
	Error   string
	Command string
}

// checkPage is the what-if form's answer: policycmd.Check, the code of
// trellis policy check.
func (c *Console) checkPage(w http.ResponseWriter, r *http.Request, ss *session) {
	d, ok := c.policies(w, r, ss)
	if !ok {
		return
	}
	q := r.URL.Query()
	in := policycmd.CheckInput{From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to")),
		Method: strings.TrimSpace(q.Get("method")), Path: strings.TrimSpace(q.Get("path")), TCP: q.Get("tcp") == "on"}
	cd := &checkData{Input: in}
	if v := strings.TrimSpace(q.Get("port")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			cd.Error = fmt.Sprintf("port %q: want a number", v)
		}
		in.Port, cd.Input.Port = n, n
	}
	args := []string{"trellis", "policy", "check", "--from", in.From, "--to", in.To}
	if in.TCP {
		args = append(args, "--tcp")
	} else {
		if in.Method != "" {
			args = append(args, "--method", in.Method)
		}
		if in.Path != "" {
			args = append(args, "--path", in.Path)
		}
	}
	if in.Port != 0 {
		args = append(args, "--port", strconv.Itoa(in.Port))
	}
	cd.Command = strings.Join(args, " ")
	code := http.StatusOK
	if cd.Error == "" {
		res, err := policycmd.Check(r.Context(), c.client(r, ss), in)
		var se *adminapi.StatusError
		var ee *exitcode.Error
		switch {
		case err == nil:
			cd.Result = res
		case errors.As(err, &ee) && ee.Code == exitcode.User && !errors.As(err, &se):
			// Bad input: shown by the form, as policy check prints it.
			cd.Error, code = err.Error(), http.StatusBadRequest
		default:
			c.apiError(w, r, ss, err)
			return
		}
	} else {
		code = http.StatusBadRequest
	}
	d.Check = cd
	c.render(w, r, ss, code, "policies", d)
}

type proxyView struct {
	adminapi.ProxyInfo
	InSync  bool
	Desired string
	Running string
}

type proxiesData struct {
	Now     time.Time
	Proxies []proxyView
}

func shortHash(v *adminapi.ConfigVersion) string {
	if v == nil {
		return "–"
	}
	h := v.Hash
	if len(h) > 12 {
		h = h[:12]
	}
	if h == "" {
		return v.Version
	}
	return v.Version + " · " + h
}

func (c *Console) proxiesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ps, err := c.client(r, ss).ListProxies(r.Context(), r.URL.Query().Get("namespace"))
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	d := proxiesData{Now: c.cfg.Now()}
	for _, p := range ps {
		pv := proxyView{ProxyInfo: p, Desired: shortHash(p.Desired), Running: shortHash(p.Running)}
		pv.InSync = p.Desired != nil && p.Running != nil && p.Desired.Version == p.Running.Version && p.Desired.Hash == p.Running.Hash
		d.Proxies = append(d.Proxies, pv)
	}
	c.render(w, r, ss, http.StatusOK, "proxies", d)
}

type proxyData struct {
	Now    time.Time
	Proxy  adminapi.ProxyStatus
	InSync bool
	Lines  []diffLine
}

// diffLine is a line of the config diff, classed for colour.
type diffLine struct{ Class, Text string }

// proxyPage is one proxy: its state and the diff from the config it
// runs to the one it should (trellis status INSTANCE).
func (c *Console) proxyPage(w http.ResponseWriter, r *http.Request, ss *session) {
	p, err := c.client(r, ss).GetProxy(r.Context(), r.PathValue("instance"))
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	d := proxyData{Now: c.cfg.Now(), Proxy: p}
	d.InSync = p.Desired != nil && p.Running != nil && p.Desired.Version == p.Running.Version && p.Desired.Hash == p.Running.Hash
	for _, l := range strings.Split(strings.TrimRight(p.Diff, "\n"), "\n") {
		if l == "" {
			continue
		}
		cls := ""
		switch {
		case strings.HasPrefix(l, "+"):
			cls = "add"
		case strings.HasPrefix(l, "-"):
			cls = "del"
		case strings.HasPrefix(l, "@@"):
			cls = "hunk"
		}
		d.Lines = append(d.Lines, diffLine{cls, l})
	}
	c.render(w, r, ss, http.StatusOK, "proxy", d)
}

// bar is one certificate on the expiry timeline.
type bar struct {
	Label    string
	NotAfter time.Time
	X, W     float64
	Y        int
	Class    string
}

type certificatesData struct {
	Now    time.Time
	CA     adminapi.CAStatus
	Bars   []bar
	Height int
	Note   string
}

func (c *Console) certificatesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	cl := c.client(r, ss)
	ca, err := cl.CAStatus(r.Context())
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	d := certificatesData{Now: c.cfg.Now(), CA: ca}
	type item struct {
		label, class string
		na           time.Time
	}
	var items []item
	for _, rt := range ca.Roots {
		items = append(items, item{"root " + rt.Subject, "root", rt.NotAfter})
	}
	items = append(items, item{"intermediate " + ca.Issuer.Subject, "issuer", ca.Issuer.NotAfter})
	ps, err := cl.ListProxies(r.Context(), "")
	if err != nil {
		d.Note = "proxy certificates not shown: " + err.Error()
	}
	for _, p := range ps {
		if p.CertExpiry != nil {
			items = append(items, item{"proxy " + p.Service + "." + p.Namespace + " " + p.Instance, "leaf", *p.CertExpiry})
		}
	}
	// The timeline runs from now to the latest expiry, on a log-like
	// scale so hour-long leaves and year-long roots both show.
	var maxD float64 = 1
	for _, it := range items {
		maxD = max(maxD, scaleOf(it.na.Sub(d.Now)))
	}
	for i, it := range items {
		wd := max(2, 480*scaleOf(it.na.Sub(d.Now))/maxD)
		d.Bars = append(d.Bars, bar{Label: it.label, NotAfter: it.na, X: 0, W: wd, Y: 10 + i*26, Class: it.class})
	}
	d.Height = 20 + len(items)*26
	c.render(w, r, ss, http.StatusOK, "certificates", d)
}

func scaleOf(d time.Duration) float64 {
	h := d.Hours()
	if h <= 0 {
		return 0
	}
	// sqrt compresses years against hours without hiding either.
	return sqrt(h)
}

// auditShown bounds the audit page's rows.
const auditShown = 100

type auditData struct {
	Events                   []adminapi.AuditEvent
	Last                     uint64
	Kind, Decision, Contains string
	Kinds                    []string
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, ss *session) {
	list, err := c.client(r, ss).AuditEvents(r.Context(), 0, adminapi.MaxAuditEvents)
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	q := r.URL.Query()
	d := auditData{Last: list.Last, Kind: q.Get("kind"), Decision: q.Get("decision"), Contains: strings.TrimSpace(q.Get("q"))}
	kinds := map[string]bool{}
	for i := len(list.Events) - 1; i >= 0; i-- { // newest first
		ev := list.Events[i]
		kinds[ev.Kind] = true
		if d.Kind != "" && ev.Kind != d.Kind || d.Decision != "" && ev.Decision != d.Decision {
			continue
		}
		if d.Contains != "" && !strings.Contains(strings.ToLower(fmt.Sprint(ev.Source, " ", ev.Destination, " ", ev.Path, " ", ev.Policy, " ", ev.Attributes)), strings.ToLower(d.Contains)) {
			continue
		}
		if len(d.Events) < auditShown {
			d.Events = append(d.Events, ev)
		}
	}
	d.Kinds = slices.Sorted(maps.Keys(kinds))
	c.render(w, r, ss, http.StatusOK, "audit", d)
}

type suggestionView struct {
	Ref   string
	Calls []string
	Obj   resource.Object
	// Refused says why the session may not apply it ("" when it may).
	Refused string
}

type anomaliesData struct {
	Alerts      []adminapi.Alert
	Suggestions []suggestionView
	Applied     string
	Note        string
}

func (c *Console) suggestions(r *http.Request, ss *session) ([]resource.Object, error) {
	return policycmd.Suggest(r.Context(), c.client(r, ss), "", coverageSince)
}

func (c *Console) anomaliesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	cl := c.client(r, ss)
	alerts, err := cl.Alerts(r.Context(), time.Time{})
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	d := anomaliesData{Alerts: alerts, Applied: r.URL.Query().Get("applied")}
	objs, err := c.suggestions(r, ss)
	if err != nil {
		d.Note = "no suggestions: " + err.Error()
	}
	for _, o := range objs {
		sv := suggestionView{Ref: o.Metadata.Namespace + "/" + o.Metadata.Name, Obj: o}
		if err := adminauth.Authorize(ss.principal, adminauth.ResourcesWrite, o.Metadata.Namespace, false); err != nil {
			sv.Refused = err.Error()
		}
		if spec, err := resource.IntentSpecOf(&o); err == nil {
			for _, call := range spec.Calls {
				m := "any method"
				if len(call.Methods) > 0 {
					m = strings.Join(call.Methods, ",")
				}
				sv.Calls = append(sv.Calls, fmt.Sprintf("%s → %s %s %s", spec.Client.Service, call.Service, m, strings.Join(call.Paths, " ")))
			}
		}
		d.Suggestions = append(d.Suggestions, sv)
	}
	c.render(w, r, ss, http.StatusOK, "anomalies", d)
}

// applySuggestion applies the suggested Intent the form names, in
// enforcement: audit (as policy suggest writes it), through the admin
// API's apply: a principal without resources.write in its namespace is
// refused there.
func (c *Console) applySuggestion(w http.ResponseWriter, r *http.Request, ss *session) {
	ref := r.PostFormValue("intent")
	objs, err := c.suggestions(r, ss)
	if err != nil {
		c.apiError(w, r, ss, err)
		return
	}
	for _, o := range objs {
		if o.Metadata.Namespace+"/"+o.Metadata.Name != ref {
			continue
		}
		if err := adminauth.Authorize(ss.principal, adminauth.ResourcesWrite, o.Metadata.Namespace, false); err != nil {
			c.refuse(w, r, ss, adminauth.ResourcesWrite, err)
			return
		}
		if _, err := c.client(r, ss).Apply(r.Context(), []resource.Object{o}, false); err != nil {
			c.apiError(w, r, ss, err)
			return
		}
		c.cfg.Logger.Info("console applied suggestion", "token", ss.principal.Name, "intent", ref)
		http.Redirect(w, r, Prefix+"/anomalies?applied="+ref, http.StatusSeeOther)
		return
	}
	c.renderError(w, r, ss, http.StatusNotFound, fmt.Sprintf("no suggestion %q now (the traffic it came from may be older than %s); reload the page", ref, coverageSince))
}
