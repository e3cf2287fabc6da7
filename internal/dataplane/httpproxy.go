package dataplane

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/dataplane/relay"
)

// ServeHTTPProxy serves an HTTP forward proxy for the app (its HTTP_PROXY):
// absolute-form requests for http://SERVICE.NAMESPACE[:port]/path go to that
// mesh service (the port is ignored for now), and CONNECT
// SERVICE.NAMESPACE:port opens a tunnel to it (tcp services, or raw bytes to
// an HTTP service, which its proxy still parses and authorizes as HTTP).
// Names that are not SERVICE.NAMESPACE of a known service get a 502. It
// returns http.ErrServerClosed after Shutdown.
func (o *Outbound) ServeHTTPProxy(l net.Listener) error {
	// HTTP/1.1 only: apps speak to forward proxies in HTTP/1.1, and
	// CONNECT needs a connection to hijack.
	srv := newHTTPServer(proxyHandler{o}, o.cfg, false, nil)
	if !o.trackServer(srv) {
		closeQuietly(l)
		return http.ErrServerClosed
	}
	return srv.Serve(l)
}

type proxyHandler struct{ o *Outbound }

func (h proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := serviceKeyFromHost(r.Host)
	if !ok {
		h.o.badHost(w, r.Host)
		return
	}
	if r.Method == http.MethodConnect {
		h.o.connect(w, r, key)
		return
	}
	h.o.serveHTTP(w, r, key, http.StatusBadGateway)
}

func (o *Outbound) badHost(w http.ResponseWriter, host string) {
	if o.logs.allow("bad host") {
		o.log.Warn("http proxy request for a host that is not SERVICE.NAMESPACE", "host", host)
	}
	o.cfg.Metrics.UpstreamFailure("", "", failUnknown)
	relay.PlainError(w, http.StatusBadGateway, "trellis: host \""+host+"\" is not a mesh service; use http://SERVICE.NAMESPACE/ (for example http://catalog.shop/)\n")
}

// connect serves CONNECT SERVICE.NAMESPACE:port. The peer is dialed before
// answering, so an unreachable service is still an HTTP error.
func (o *Outbound) connect(w http.ResponseWriter, r *http.Request, key string) {
	t, rt := o.lookup(key)
	if t == nil {
		o.refuse(w, key, nil, failNoConfig, http.StatusServiceUnavailable, "no mesh configuration yet")
		return
	}
	if rt == nil {
		o.refuse(w, key, nil, failUnknown, o.unknownCode(http.StatusBadGateway), unknownMessage)
		return
	}
	e, tc, reason, err := o.dialTunnel(rt)
	if errors.Is(err, errNoEndpoints) {
		relay.PlainError(w, http.StatusServiceUnavailable, noEndpointsMessage(key))
		return
	}
	if err != nil {
		relay.PlainError(w, http.StatusServiceUnavailable, "trellis: "+key+" unavailable ("+reason+"): "+err.Error()+"\n")
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		closeQuietly(tc)
		relay.PlainError(w, http.StatusInternalServerError, "trellis: cannot take over the connection for CONNECT\n")
		return
	}
	if !o.conns.Add(c) {
		closeQuietly(tc)
		closeQuietly(c)
		return
	}
	defer o.conns.Remove(c)
	if _, err := c.Write(connectEstablished); err != nil {
		closeQuietly(tc)
		closeQuietly(c)
		return
	}
	var cr io.Reader = c
	if brw.Reader.Buffered() > 0 {
		cr = brw.Reader
	}
	o.tunnel(c, cr, rt, e, tc)
}

var connectEstablished = []byte("HTTP/1.1 200 Connection established\r\n\r\n")

// serviceKeyFromHost turns a Host (SERVICE.NAMESPACE, optionally with a
// port or a trailing dot) into a service key. A bare SERVICE is refused:
// the namespace is part of the name.
func serviceKeyFromHost(host string) (string, bool) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	name, ns, ok := strings.Cut(host, ".")
	if !ok || name == "" || ns == "" || strings.IndexByte(ns, '.') >= 0 {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host), true
		}
	}
	return host, true
}
