package proxy

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ConfigView is the JSON served at /config.
type ConfigView struct {
	SPIFFEID     string        `json:"spiffeID"`
	Service      string        `json:"service"`
	Namespace    string        `json:"namespace"`
	Protocol     string        `json:"protocol"`
	Advertise    string        `json:"advertiseAddr,omitempty"`
	Certificate  *CertView     `json:"certificate,omitempty"`
	Version      string        `json:"configVersion,omitempty"`
	Hash         string        `json:"configHash,omitempty"`
	MTLSMode     string        `json:"mtlsMode,omitempty"`
	AuthzDefault string        `json:"authorizationDefault,omitempty"`
	Connected    bool          `json:"controlPlaneConnected"`
	Services     []ServiceView `json:"services"`
	Policies     []string      `json:"policies"`
}

// CertView describes the current workload certificate.
type CertView struct {
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

// ServiceView is one service the proxy can call.
type ServiceView struct {
	Name      string         `json:"name"`
	Namespace string         `json:"namespace"`
	Protocol  string         `json:"protocol"`
	Endpoints []EndpointView `json:"endpoints"`
}

// EndpointView is one endpoint of a service.
type EndpointView struct {
	Address  string `json:"address"`
	SPIFFEID string `json:"spiffeID"`
}

func (p *Proxy) adminHandler(reg *prometheus.Registry) http.Handler {
	mux := p.healthMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		writeAdminJSON(w, http.StatusOK, p.configView())
	})
	return mux
}

// healthMux serves /live and /readiness (/ready): the health endpoint
// (--health-addr) and the start of the admin endpoint.
func (p *Proxy) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		writeAdminJSON(w, http.StatusOK, map[string]string{"status": "live"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if reason := p.notReady(); reason != "" {
			writeAdminJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": reason})
			return
		}
		writeAdminJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

// notReady says why the proxy is not ready, or "" when it is: it needs a
// valid certificate and a first config.
func (p *Proxy) notReady() string {
	c := p.certs.Certificate()
	switch {
	case p.draining.Load():
		return "draining: shutting down"
	case c == nil:
		return "no workload certificate yet"
	case !p.cfg.Clock.Now().Before(c.Leaf.NotAfter):
		return "workload certificate expired"
	case p.snapshot() == nil:
		return "no config from the control plane yet"
	}
	return ""
}

func (p *Proxy) configView() ConfigView {
	v := ConfigView{
		SPIFFEID:  p.certs.ID().String(),
		Service:   p.cfg.Service,
		Namespace: p.cfg.Namespace,
		Protocol:  p.cfg.Protocol,
		Advertise: p.advertiseAddr,
		Connected: p.connected.Load(),
		Services:  []ServiceView{},
		Policies:  []string{},
	}
	if c := p.certs.Certificate(); c != nil {
		v.Certificate = &CertView{Serial: c.Leaf.SerialNumber.Text(16), NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter}
	}
	if s := p.snapshot(); s != nil {
		v.Version, v.Hash, v.MTLSMode, v.AuthzDefault = s.Version, s.Hash, s.MTLSMode, s.AuthzDefault
		for _, svc := range s.Services {
			sv := ServiceView{Name: svc.Name, Namespace: svc.Namespace, Protocol: svc.Protocol, Endpoints: []EndpointView{}}
			for _, ep := range svc.Endpoints {
				sv.Endpoints = append(sv.Endpoints, EndpointView{Address: ep.Addr, SPIFFEID: ep.ID.String()})
			}
			v.Services = append(v.Services, sv)
		}
		sort.Slice(v.Services, func(i, j int) bool {
			a, b := v.Services[i], v.Services[j]
			return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
		})
		for _, o := range s.Policies {
			v.Policies = append(v.Policies, o.Metadata.Namespace+"/"+o.Metadata.Name)
		}
	}
	return v
}

func writeAdminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
