package extauthz

import (
	"context"
	"fmt"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/meshconfig"
)

// Pool holds one gRPC connection per provider address. Check opens a
// connection on first use; Retain closes those no provider uses any
// more. A Pool is safe for concurrent use; the zero value is not usable,
// use NewPool.
type Pool struct {
	mu     sync.RWMutex
	conns  map[string]*conn
	closed bool
}

type conn struct {
	cc     *grpc.ClientConn
	client authv3.AuthorizationClient
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{conns: map[string]*conn{}} }

// reconnect bounds the wait between reconnection attempts: a provider
// that comes back is asked again within about a second (gRPC's default
// backoff grows to two minutes, failing requests closed all that time).
var reconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

// Check asks provider p about req, waiting at most p.Timeout. A nil p
// (a policy naming a provider the Mesh lacks, named by name) fails
// closed. A provider that does not answer fails closed unless p.FailOpen.
func (pl *Pool) Check(ctx context.Context, name string, p *meshconfig.ExtAuthzProvider, req *Request) Result {
	if p == nil {
		return failed(nil, fmt.Errorf("extauthz check %s: %w", name, ErrUnknownProvider))
	}
	c, err := pl.conn(p.Address)
	if err != nil {
		return failed(p, checkError(name, err))
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	resp, err := c.client.Check(ctx, checkRequest(p, req))
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded {
			err = context.DeadlineExceeded
		}
		return failed(p, checkError(name, err))
	}
	return result(p, resp)
}

// conn returns the connection to addr, opening it if need be (gRPC
// dials lazily and redials after failures).
func (pl *Pool) conn(addr string) (*conn, error) {
	pl.mu.RLock()
	c := pl.conns[addr]
	pl.mu.RUnlock()
	if c != nil {
		return c, nil
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil, fmt.Errorf("connection pool closed")
	}
	if c := pl.conns[addr]; c != nil {
		return c, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), reconnect)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	c = &conn{cc: cc, client: authv3.NewAuthorizationClient(cc)}
	pl.conns[addr] = c
	return c, nil
}

// Retain closes the connections to addresses no provider in ps has: a
// new configuration keeps the connections of the providers it keeps.
func (pl *Pool) Retain(ps map[string]*meshconfig.ExtAuthzProvider) {
	keep := make(map[string]bool, len(ps))
	for _, p := range ps {
		keep[p.Address] = true
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for addr, c := range pl.conns {
		if !keep[addr] {
			c.cc.Close()
			delete(pl.conns, addr)
		}
	}
}

// Len is the number of open connections.
func (pl *Pool) Len() int {
	pl.mu.RLock()
	defer pl.mu.RUnlock()
	return len(pl.conns)
}

// Close closes every connection; later checks fail (closed, unless
// failing open).
func (pl *Pool) Close() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.closed = true
	for addr, c := range pl.conns {
		c.cc.Close()
		delete(pl.conns, addr)
	}
}
