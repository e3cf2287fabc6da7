package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry"
)

// Sink is one destination for log records.
//
// The Deliverer calls Send and Close from one goroutine; implementations
// need not be safe for concurrent use.
type Sink interface {
	// Send delivers recs, a non-empty run of consecutive records, in order.
	// It returns nil only once the destination has accepted all of them (see
	// the package doc for what each protocol can promise). On error any part
	// of recs may have arrived; the caller sends the same records again.
	// Send does not keep or modify recs. Cancelling ctx abandons the batch
	// with an error.
	Send(ctx context.Context, recs []telemetry.Record) error
	// Close releases the sink's connections and files. A later Send opens
	// them again.
	Close() error
}

// Options tune the sinks Parse makes. The zero value gives the defaults.
type Options struct {
	// Hostname is the syslog HOSTNAME field; "" means os.Hostname().
	Hostname string
	// Timeout bounds one dial, one write or POST, and the wait for a syslog
	// server's TCP acknowledgement; 0 means 10s.
	Timeout time.Duration
	// SyslogSettle is how long a syslog sink watches the connection after
	// the server's TCP stack acknowledged a batch before it reports the
	// batch delivered, so that a server going away with the batch unread
	// makes it fail instead; 0 means 20ms. A syslog sink sends at most one
	// batch per SyslogSettle, so raise MaxBatch with it.
	SyslogSettle time.Duration
	// SyslogMaxMessage is the largest syslog message (without the framing)
	// a sink sends, shortening field values to fit; 0 means 8000 bytes,
	// under rsyslog's default limit of 8096, and less than 2048 means 2048
	// (what RFC 5425 receivers must accept).
	SyslogMaxMessage int
	// HTTPClient sends the POSTs; nil means a client with Timeout. Parse
	// uses a copy that does not follow redirects.
	HTTPClient *http.Client
	// HTTPHeader is added to every POST (for example the Authorization a
	// SIEM's HTTP collector wants).
	HTTPHeader http.Header
}

const (
	defaultTimeout          = 10 * time.Second
	defaultSyslogSettle     = 20 * time.Millisecond
	defaultSyslogMaxMessage = 8000
)

// acceptedForms ends every Parse error, so the operator sees what works.
const acceptedForms = "use syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT[?ca=CA.pem&servername=NAME&cert=CERT.pem&key=KEY.pem], " +
	"file:///ABS/PATH.jsonl, or an http:// or https:// URL"

// Parse makes the sink an --audit-sink URL names. It checks the URL and
// any files it names (certificates, the JSON lines file's directory) but
// does not connect: the first Send does.
func Parse(rawURL string, opts Options) (Sink, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the raw URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("--audit-sink: not a URL (%v); %s", err, acceptedForms)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("--audit-sink %s: %s; %s", Display(rawURL), fmt.Sprintf(format, args...), acceptedForms)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	switch u.Scheme {
	case "syslog+tcp", "syslog+tls":
		s, err := newSyslogSink(u, opts)
		if err != nil {
			return nil, fail("%v", err)
		}
		return s, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fail("a file URL names a local path, not host %q", u.Host)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fail("a file URL takes no query or fragment")
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) || strings.HasSuffix(u.Path, "/") {
			return nil, fail("need an absolute file path, as in file:///var/log/trellis/audit.jsonl")
		}
		if fi, err := os.Stat(filepath.Dir(u.Path)); err != nil || !fi.IsDir() {
			return nil, fail("directory %s does not exist; create it first", filepath.Dir(u.Path))
		}
		return &fileSink{path: filepath.Clean(u.Path)}, nil
	case "http", "https":
		if u.Host == "" {
			return nil, fail("missing host")
		}
		return newHTTPSink(u, opts), nil
	case "":
		return nil, fail("missing scheme")
	default:
		return nil, fail("scheme %q is not supported", u.Scheme)
	}
}

// Display is rawURL without credentials or query, for logs and errors:
// query parameters of HTTP collectors often carry tokens.
func Display(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	d := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return d.String()
}

// hostPort is u's host and port, with the scheme's default port when u
// names none.
func hostPort(u *url.URL, defaultPort string) (string, error) {
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", errors.New("missing host")
	}
	if port == "" {
		port = defaultPort
	}
	return net.JoinHostPort(host, port), nil
}
