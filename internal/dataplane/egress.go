package dataplane

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/dataplane/capture"
	"github.com/trellismesh/trellis/internal/egress"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Egress control (docs/egress.md): when EgressPolicies select the
// workload, a captured connection to a destination that is no mesh
// service is passed through only when one of them lists the host its
// first bytes name (TLS SNI, HTTP Host; the destination address when
// they name none) with its port. The proxy never terminates the
// external TLS: it reads the ClientHello or request head, decides, and
// replays those bytes to the original destination unchanged.

// egressSniffTimeout bounds the wait for a captured connection's first
// bytes. TLS and HTTP clients send at once; a server-first protocol names
// no host and is refused when the time is up.
const egressSniffTimeout = 5 * time.Second

// EventEgressDenied is the kind of the audit event of a refused egress
// connection.
const EventEgressDenied = "egress.denied"

// serveEgress decides a captured connection to dst, which is no mesh
// service, by the workload's EgressPolicies (rules, not empty).
func (cp *captureLoop) serveEgress(c net.Conn, dst netip.AddrPort, snap *meshconfig.Snapshot) {
	h, err := capture.SniffHost(c, egressSniffTimeout)
	if err != nil {
		cp.refuse(c, capture.ResultError, "connection to a destination outside the mesh ended before its first bytes", dst, err)
		return
	}
	d := snap.Egress.Decide(egress.NormalizeHost(h.Host), dst)
	if !d.Allow {
		cp.denyEgress(c, dst, h, d, snap)
		return
	}
	if err := capture.PassthroughPrefix(c, h.Prefix, dst, cp.dialer, cp.metrics, capture.ResultEgressAllowed); err != nil {
		cp.refuse(c, capture.ResultError, "egress to "+d.Host+" allowed by "+d.Policy+", but the destination could not be reached", dst, err)
	}
}

// denyEgress refuses a connection no EgressPolicy allows: counted,
// logged (at most one line a second), reported as an egress.denied event
// naming the caller and the host, and answered as the protocol allows: a
// 403 to an HTTP request, an access_denied alert to a TLS ClientHello, a
// reset otherwise.
func (cp *captureLoop) denyEgress(c net.Conn, dst netip.AddrPort, h capture.Hello, d egress.Decision, snap *meshconfig.Snapshot) {
	o := cp.o
	cp.metrics.Captured(capture.ResultEgressDenied)
	policies := strings.Join(snap.Egress.Refs(), ",")
	reason := fmt.Sprintf("no EgressPolicy selecting this workload allows host %s port %d", d.Host, dst.Port())
	if o.logs.allow("capture " + capture.ResultEgressDenied) {
		o.log.Warn("egress denied", "event", EventEgressDenied, "source", o.principal, "host", d.Host, "port", dst.Port(),
			"destination", dst.String(), "protocol", h.Proto, "policies", policies)
	}
	if o.cfg.Events != nil {
		attrs := map[string]string{"host": d.Host, "port": strconv.Itoa(int(dst.Port())), "destination": dst.String(), "policies": policies}
		if h.Host != "" && egress.NormalizeHost(h.Host) == "" {
			attrs["sent_host"] = truncate(h.Host, 255) // not a host name: matched by address
		}
		proto := h.Proto
		if proto == "" {
			proto = "tcp"
		}
		o.cfg.Events(&pb.Event{
			Time:            timestamppb.Now(),
			Kind:            EventEgressDenied,
			SourceId:        o.principal,
			SourceService:   o.cfg.Service,
			SourceNamespace: o.namespace,
			Protocol:        proto,
			Decision:        "deny",
			Reason:          reason,
			Rule:            -1,
			Attributes:      attrs,
		})
	}
	switch h.Proto {
	case capture.HelloHTTP:
		msg := "egress denied: " + reason
		if !snap.HidePolicy {
			msg += " (" + policies + ")"
		}
		answerAndClose(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"+deniedByHeader+": egress\r\nConnection: close\r\nContent-Length: "+
			strconv.Itoa(len(msg)+1)+"\r\n\r\n"+msg+"\n")
	case capture.HelloTLS:
		// A fatal access_denied alert (TLS 1.2 record version, which
		// every client accepts before the handshake settles one).
		answerAndClose(c, "\x15\x03\x03\x00\x02\x02\x31")
	default:
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		closeQuietly(c)
	}
}

// answerAndClose writes msg, ends the sending side and waits briefly for
// the client to close, so that what it still sends (a request body) does
// not turn the close into a reset that destroys the answer.
func answerAndClose(c net.Conn, msg string) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, msg); err == nil {
		if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		}
	}
	closeQuietly(c)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
