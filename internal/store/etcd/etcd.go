package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/trellismesh/trellis/internal/store"
)

// Defaults for zero Config fields.
const (
	DefaultPrefix         = "/trellis"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultWatchBuffer    = 1024
)

// revOffset is etcd's revision of an empty cluster, the contract's 0.
const revOffset = 1

// Config says how to reach the cluster. Zero values mean the documented
// defaults.
type Config struct {
	// Endpoints are the members' client addresses, HOST:PORT. Required.
	Endpoints []string
	// Prefix is prepended to every key. Default DefaultPrefix.
	Prefix string
	// TLS is the client TLS configuration: the CA that signed the members'
	// certificates and, for --client-cert-auth, a client certificate. Nil
	// means plaintext.
	TLS *tls.Config
	// DialTimeout bounds Open's wait for an answer from the cluster.
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds each call whose context has no deadline.
	// Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// WatchBuffer is each watch channel's buffer; a watcher that lets it
	// fill is closed. Default DefaultWatchBuffer.
	WatchBuffer int
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("no endpoints")
	}
	for _, ep := range c.Endpoints {
		if _, port, err := net.SplitHostPort(ep); err != nil || port == "" {
			return c, fmt.Errorf("endpoint %q: want HOST:PORT", ep)
		}
	}
	if c.DialTimeout < 0 || c.RequestTimeout < 0 || c.WatchBuffer < 0 {
		return c, errors.New("DialTimeout, RequestTimeout and WatchBuffer must not be negative")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WatchBuffer == 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	return c, nil
}

// Store is a store.Store on an etcd cluster. Create it with Open.
type Store struct {
	cl  *clientv3.Client
	cfg Config
	eps string // for messages

	mu      sync.Mutex
	closed  bool
	watches map[*watch]struct{}
	wg      sync.WaitGroup // forwarding goroutines
}

var _ store.Store = (*Store)(nil)

// Open connects to the cluster and waits, at most Config.DialTimeout and
// within ctx, until a member with a leader answers. An unreachable cluster
// or one without a quorum is an error wrapping store.ErrUnavailable.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("etcd open: %w", err)
	}
	scheme := "http://"
	if cfg.TLS != nil {
		scheme = "https://"
	}
	urls := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		urls[i] = scheme + ep
	}
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:   urls,
		TLS:         cfg.TLS,
		DialTimeout: cfg.DialTimeout,
		// Find a dead connection under a watch without waiting for TCP.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		// Reconnect to a restarted member within seconds: gRPC's
		// default backs off to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd open %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &Store{cl: cl, cfg: cfg, eps: strings.Join(cfg.Endpoints, ","), watches: map[*watch]struct{}{}}

	octx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := s.cl.Get(clientv3.WithRequireLeader(octx), cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		cl.Close()
		return nil, s.openError(ctx, err)
	}
	return s, nil
}

// Prefix is the prefix of every key of the store in etcd.
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	what := fmt.Sprintf("etcd get %q", key)
	if err := s.check(ctx, what); err != nil {
		return store.KV{}, err
	}
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	resp, err := s.cl.Get(cctx, s.cfg.Prefix+key)
	if err != nil {
		return store.KV{}, s.wrap(ctx, what, err)
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return s.kv(resp.Kvs[0]), nil
}

// List implements store.Store: one range read, so the keys and the
// revision are of one moment.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	what := fmt.Sprintf("etcd list %q", prefix)
	if err := s.check(ctx, what); err != nil {
		return nil, 0, err
	}
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	resp, err := s.cl.Get(cctx, s.cfg.Prefix+prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.wrap(ctx, what, err)
	}
	kvs := make([]store.KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = s.kv(kv)
	}
	return kvs, resp.Header.Revision - revOffset, nil
}

// Revision implements store.Store: the cluster's revision, read through
// the leader.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := s.check(ctx, "etcd revision"); err != nil {
		return 0, err
	}
	rev, err := s.revision(ctx)
	if err != nil {
		return 0, s.wrap(ctx, "etcd revision", err)
	}
	return rev, nil
}

func (s *Store) revision(ctx context.Context) (int64, error) {
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	resp, err := s.cl.Get(cctx, s.cfg.Prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision - revOffset, nil
}

// Close implements store.Store: it closes every watch and the connection.
// Later calls return nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for w := range s.watches {
		w.cancel()
	}
	s.mu.Unlock()
	err := s.cl.Close()
	s.wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd close: %w", err)
	}
	return nil
}

// check fails a call on a closed store or a done context.
func (s *Store) check(ctx context.Context, what string) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// callCtx bounds one call by ctx's deadline, or RequestTimeout when it has
// none, and requires a member with a leader, so that a lost quorum fails
// the call at once rather than at the deadline.
func (s *Store) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); ok {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
	}
	return clientv3.WithRequireLeader(ctx), cancel
}

func (s *Store) kv(kv *mvccpb.KeyValue) store.KV {
	return store.KV{
		Key:            strings.TrimPrefix(string(kv.Key), s.cfg.Prefix),
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision - revOffset,
		ModRevision:    kv.ModRevision - revOffset,
	}
}
