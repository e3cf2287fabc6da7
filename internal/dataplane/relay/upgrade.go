package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/trellismesh/trellis/internal/dataplane/admission"
	"github.com/trellismesh/trellis/internal/dataplane/connset"
)

// UpgradeType returns the protocol an HTTP/1.1 request asks to switch to
// (WebSocket), or "". HTTP/2 requests cannot upgrade, and an Upgrade on
// HTTP/1.0 is ignored (RFC 9110 7.8). The inbound decides with
// the admission chain instead.
func UpgradeType(r *http.Request) string {
	if r.ProtoMajor != 1 || r.ProtoMinor == 0 {
		return ""
	}
	c, ok := r.Header["Connection"]
	if !ok || !admission.HasToken(c, "upgrade") {
		return ""
	}
	return r.Header.Get("Upgrade")
}

var errUpgradeMismatch = errors.New("upstream switched to a protocol the client did not ask for")

// ForwardUpgrade sends an Upgrade request through rt. A non-101 answer is
// copied back like any response; a 101 hijacks the client connection and
// relays bytes both ways until either side closes. It returns the status
// code for metrics, and an error only when no response reached the client.
func ForwardUpgrade(w http.ResponseWriter, r *http.Request, rt http.RoundTripper, scheme, host, upType string, conns *connset.Set) (int, error) {
	out := NewOutRequest(r, scheme, host)
	out.Header["Connection"] = []string{"Upgrade"}
	out.Header["Upgrade"] = []string{upType}
	resp, err := rt.RoundTrip(out)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if err := CopyResponse(w, r, resp); err != nil {
			var ue *UpstreamBodyError
			if errors.As(err, &ue) {
				panic(http.ErrAbortHandler)
			}
		}
		return resp.StatusCode, nil
	}
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return 0, errors.New("upstream switched protocols without a writable body")
	}
	resType := resp.Header.Get("Upgrade")
	if !strings.EqualFold(resType, upType) {
		back.Close()
		return 0, fmt.Errorf("%w: asked %q, got %q", errUpgradeMismatch, upType, resType)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		back.Close()
		return 0, fmt.Errorf("hijack client connection: %w", err)
	}
	if !conns.Add(conn) {
		back.Close()
		closeQuietly(conn)
		return http.StatusSwitchingProtocols, nil
	}
	defer conns.Remove(conn)
	h := make(http.Header, len(resp.Header))
	for k, vv := range resp.Header {
		if !IsHopHeader(k) {
			h[k] = vv
		}
	}
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{resType}
	if err := writeSwitchingProtocols(brw.Writer, h); err != nil {
		back.Close()
		closeQuietly(conn)
		return http.StatusSwitchingProtocols, nil
	}
	var cr io.Reader = conn
	if brw.Reader.Buffered() > 0 {
		cr = brw.Reader
	}
	Pipe(conn, cr, back, back, nil, nil)
	return http.StatusSwitchingProtocols, nil
}

func writeSwitchingProtocols(bw *bufio.Writer, h http.Header) error {
	if _, err := bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return err
	}
	if err := h.Write(bw); err != nil {
		return err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	return bw.Flush()
}
