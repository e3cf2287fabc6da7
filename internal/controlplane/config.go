package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/controlplane/admintokens"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/resstore"
	"github.com/trellismesh/trellis/internal/controlplane/tokens"
	"github.com/trellismesh/trellis/internal/controlplane/vips"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/store"
)

// Defaults for Config's zero values.
const (
	DefaultGRPCAddr    = "127.0.0.1:15012"
	DefaultAPIAddr     = "127.0.0.1:15014"
	DefaultTrustDomain = identity.DefaultTrustDomain

	// DefaultEndpointGracePeriod is how long a workload whose config stream
	// ended stays an endpoint: long enough for a proxy restart or a
	// control plane failover not to flap every caller's endpoint list.
	DefaultEndpointGracePeriod = 15 * time.Second
	// DefaultReportInterval is how often proxies report what they run.
	DefaultReportInterval = 30 * time.Second
	// DefaultPushDebounce gathers a burst of changes (an apply of many
	// policies, many proxies joining) into one push round.
	DefaultPushDebounce = 25 * time.Millisecond
	// DefaultAckTimeout is how long a sent snapshot may go unanswered
	// before its proxy counts as STALE.
	DefaultAckTimeout = registry.DefaultAckTimeout
	// DefaultDriftGrace is how long a proxy may report running other
	// content than it acknowledged before it counts as DRIFTED and is
	// sent its snapshot again.
	DefaultDriftGrace = registry.DefaultDriftGrace
)

// DefaultVIPRange is where services' virtual IPs come from: part of
// 240.0.0.0/4, reserved and never routed, so a VIP never shadows a real
// destination.
var DefaultVIPRange = vips.DefaultRange

// ResourceSource gives the mesh's resources from outside the store
// (Config.Resources): see resstore.Source.
type ResourceSource = resstore.Source

// ResourceWriter is a ResourceSource that also takes the admin API's
// writes: see resstore.Writer.
type ResourceWriter = resstore.Writer

// TokenRecords keeps join tokens' records where every control-plane
// replica sees them (Config.TokenRecords): see tokens.Records.
type TokenRecords = tokens.Records

// AdminTokenRecords keeps admin tokens' records where every control-plane
// replica sees them (Config.AdminTokenRecords): see admintokens.Records.
type AdminTokenRecords = admintokens.Records

// DefaultTokenTTL is a join token's lifetime when none is asked for.
const DefaultTokenTTL = tokens.DefaultTTL

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// DataDir holds the CA keys, admin.token and ca.crt (and, by the
	// command line's choice, the bolt store at DataDir/StoreFile).
	// Required; created 0700.
	DataDir string
	// Store holds the desired state (resources, join tokens, the trust
	// domain, VIPs, the saved registry). Required. The caller opens it and
	// closes it after Close has returned (or after New failed): the
	// server never closes it. One store serves one server at a time.
	Store store.Store
	// GRPCAddr is the TLS gRPC listener for proxies (default 127.0.0.1:15012;
	// port 0 picks a free port, see Server.GRPCAddr).
	GRPCAddr string
	// APIAddr is the HTTP admin API listener (default 127.0.0.1:15014). A
	// non-loopback address is served with TLS.
	APIAddr string
	// TrustDomain is fixed at first start. Empty means the stored one, or
	// trellis.local at first start.
	TrustDomain string
	// CACertFile and CAKeyFile load an intermediate issued by the user's PKI
	// instead of generating a CA; set both or neither.
	CACertFile string
	CAKeyFile  string
	// Resources, when set, is where the mesh's resources come from
	// instead of the store (Kubernetes mode: the custom resources'
	// accepted versions, internal/kube/resources); the admin API's writes
	// go to it when it is a ResourceWriter, else they are refused.
	Resources ResourceSource
	// CAShare, when set, shares the CA with other control-plane replicas
	// (Kubernetes mode: the Secret every replica loads, casecret.Share): a
	// rotation or retirement made here is published to it, one made
	// elsewhere is reloaded, and retiring a root checks every replica's
	// proxies.
	CAShare CAShare
	// ReplicaID, when set, names this replica among control planes sharing
	// Store (etcd): its registry is written for the others under this name,
	// and theirs join its snapshots (peers.go).
	ReplicaID string
	// Elector, when set with ReplicaID, elects the one replica that runs
	// the singletons (singletons.go): collecting gone replicas' records,
	// and with CollectorAddr forwarding the audit outbox. The etcd store
	// is one.
	Elector Elector
	// Workloads, when set, gives the mesh's workloads and their virtual
	// IPs instead of the registry of connected proxies (Kubernetes mode:
	// EndpointSlices and Pods; ClusterIPs are the virtual IPs). Config
	// streams still carry each proxy's snapshot and ACKs.
	Workloads WorkloadSource
	// WorkloadTokens, when set, also accepts workload tokens other than
	// join tokens in Certify: in Kubernetes mode a proxy's projected
	// ServiceAccount token, reviewed with the API server
	// (internal/kube/satoken). Join tokens keep working (VMs joining a
	// cluster's mesh).
	WorkloadTokens WorkloadTokenReviewer
	// TokenRecords, when set, keeps the join tokens' records (never the
	// tokens) instead of the store (Kubernetes mode: ConfigMaps in the
	// control plane's namespace, internal/kube/tokenrecords), so a token
	// issued or revoked through one replica is known to every replica.
	// Nil means the store, as in hosts mode.
	TokenRecords TokenRecords
	// AdminTokenRecords, when set, keeps the admin tokens' records (never
	// the tokens: their SHA-256) instead of the store (Kubernetes mode:
	// Secrets in the control plane's namespace,
	// internal/kube/admintokenrecords), so an admin token created or
	// revoked through one replica holds on every replica. Nil means the
	// store, as in hosts mode.
	AdminTokenRecords AdminTokenRecords
	// WorkloadTTL, when set, overrides Mesh.spec.certificates.workloadTTL
	// (whose minimum is 5m): tests use seconds to exercise renewal.
	WorkloadTTL time.Duration
	// AuditSinks are --audit-sink URLs: every event in the log is delivered
	// to each at least once (syslog+tcp://, syslog+tls://, file://, http(s)://).
	AuditSinks []string
	// CollectorAddr, when set, is an external collector (`trellis
	// collector`), host:port: proxies are told to stream telemetry there,
	// and the control plane sends its own events there too (spooled under
	// DATA_DIR/telemetry-spool while it is unreachable) instead of
	// embedding a collector. AuditSinks must then be empty: sinks belong
	// to the process that runs the collector.
	CollectorAddr string
	// MetricsRequireToken makes /metrics on the admin API need the admin
	// bearer token like /api/; the default serves it without one, for
	// scrapers on a trusted network.
	MetricsRequireToken bool
	// ConsoleSessionTTL is how long a web console session lasts from
	// login; 0 means 8h (console.DefaultSessionTTL).
	ConsoleSessionTTL time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Clock is the control plane's one clock (certificates, tokens, ACK
	// timeouts, the drift grace, the endpoint grace, the push debounce and
	// sweep, registry writes, the resource watch's retry, the emitter to
	// an external collector); nil means the system clock.
	Clock clock.Clock
	// EndpointGracePeriod is how long a workload stays in other proxies'
	// snapshots after its config stream ended (0 means
	// DefaultEndpointGracePeriod). A reconnect within it is seamless.
	EndpointGracePeriod time.Duration
	// ReportInterval is the Snapshot.report_interval_seconds proxies are
	// told (0 means DefaultReportInterval; rounded up to whole seconds).
	ReportInterval time.Duration
	// PushDebounce is how long a change waits for more changes before
	// snapshots are rebuilt (0 means DefaultPushDebounce). It bounds the
	// added propagation delay; it is never extended by further changes.
	PushDebounce time.Duration
	// AckTimeout is how long a sent snapshot may go without an ACK or
	// NACK: a proxy is SYNCING until then, STALE after (0 means
	// DefaultAckTimeout).
	AckTimeout time.Duration
	// DriftGrace is how long a proxy may report running other content
	// than the snapshot it acknowledged before it is DRIFTED and the
	// snapshot is re-sent, at most once per DriftGrace (0 means
	// DefaultDriftGrace).
	DriftGrace time.Duration
	// VIPRange is where services' stable virtual IPs come from (mesh DNS,
	// transparent capture); zero means DefaultVIPRange. Assignments are
	// kept forever, so the range must outgrow the number of services
	// ever seen; when it is full, new services get no VIP.
	VIPRange netip.Prefix
}

func (c *Config) setDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Clock = clock.Or(c.Clock)
	if c.EndpointGracePeriod == 0 {
		c.EndpointGracePeriod = DefaultEndpointGracePeriod
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = DefaultReportInterval
	}
	if c.PushDebounce == 0 {
		c.PushDebounce = DefaultPushDebounce
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.DriftGrace == 0 {
		c.DriftGrace = DefaultDriftGrace
	}
	if c.VIPRange == (netip.Prefix{}) {
		c.VIPRange = DefaultVIPRange
	}
}

// errDataDirRequired is the answer to an empty --data-dir, from validate
// and from PrepareDataDir.
var errDataDirRequired = errors.New("--data-dir is required: a directory for the store, CA keys and admin token")

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errDataDirRequired
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--api-addr", c.APIAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT: %w", a.flag, a.addr, err)
		}
	}
	if c.CollectorAddr != "" {
		if _, _, err := net.SplitHostPort(c.CollectorAddr); err != nil {
			return fmt.Errorf("--collector-addr %q: want HOST:PORT of a `trellis collector`: %w", c.CollectorAddr, err)
		}
		if len(c.AuditSinks) > 0 {
			return errors.New("--audit-sink and --collector-addr do not go together: sinks belong to the process that runs the collector; give --audit-sink to `trellis collector`")
		}
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		return errors.New("--ca-cert and --ca-key go together: give both to use your own intermediate, or neither to let Trellis create a CA")
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--endpoint-grace-period", c.EndpointGracePeriod}, {"--report-interval", c.ReportInterval}, {"--push-debounce", c.PushDebounce},
		{"--ack-timeout", c.AckTimeout}, {"--drift-grace", c.DriftGrace}} {
		if d.v < 0 {
			return fmt.Errorf("%s %s: must not be negative", d.flag, d.v)
		}
	}
	if err := vips.ValidateRange(c.VIPRange); err != nil {
		return err
	}
	if c.Store == nil {
		return errors.New("config: no Store: open a backend (the command line opens bolt at DATA_DIR/" + StoreFile + ") and pass it")
	}
	return nil
}

// isLoopbackAddr reports whether a listen address only accepts local
// connections.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
