package h2relay

import (
	"context"
	"net"
	"sync"
)

// Pool holds the upstream connections to one destination: a new stream
// goes on the least busy connection that takes it, and another connection
// is dialed (up to Config.MaxConns) when every one carries SoftStreams or
// more.
type Pool struct {
	cfg  *Config
	dial func(ctx context.Context) (net.Conn, error)

	mu     sync.Mutex
	conns  []*Conn
	dialMu sync.Mutex // one dial at a time
	closed bool
}

// NewPool makes a pool that dials with dial (which returns a connection
// that negotiated HTTP/2: TLS with ALPN h2, or cleartext with prior
// knowledge).
func NewPool(cfg *Config, dial func(ctx context.Context) (net.Conn, error)) *Pool {
	d := cfg.withDefaults()
	d.defaulted = true
	return &Pool{cfg: &d, dial: dial}
}

// Get returns a connection for a new stream, dialing one if needed.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	if c, full := p.pick(); c != nil && !full {
		return c, nil
	}
	p.dialMu.Lock()
	defer p.dialMu.Unlock()
	c, full := p.pick()
	if c != nil && !full {
		return c, nil
	}
	p.mu.Lock()
	room := len(p.conns) < p.cfg.MaxConns && !p.closed
	p.mu.Unlock()
	if !room && c != nil {
		return c, nil
	}
	nc, err := p.dial(ctx)
	if err != nil {
		if c != nil {
			return c, nil
		}
		return nil, err
	}
	uc := newConn(nc, nil, p.cfg, sideUp)
	uc.pool = p
	if err := uc.start(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = nc.Close()
		return nil, net.ErrClosed
	}
	p.conns = append(p.conns, uc)
	p.mu.Unlock()
	go func() { _ = uc.serve() }()
	return uc, nil
}

// pick is the least busy live connection; full says it carries
// SoftStreams or more (or its peer's limit).
func (p *Pool) pick() (best *Conn, full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bestN := 0
	for _, c := range p.conns {
		if c.goingAway.Load() || c.closed.Load() {
			continue
		}
		n := c.Active()
		if int64(n) >= int64(c.peerMaxConc.Load()) {
			continue
		}
		if best == nil || n < bestN {
			best, bestN = c, n
		}
	}
	if best == nil {
		return nil, true
	}
	return best, bestN >= p.cfg.SoftStreams
}

func (p *Pool) remove(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			return
		}
	}
}

// CloseIdle drains every connection: each closes once its streams end.
// With closing, the pool takes no new connections.
func (p *Pool) CloseIdle(closing bool) {
	p.mu.Lock()
	conns := append([]*Conn(nil), p.conns...)
	if closing {
		p.closed = true
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Drain()
	}
}
