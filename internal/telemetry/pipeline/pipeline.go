package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"

	"github.com/trellismesh/trellis/internal/clock"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/telemetry/sink"
)

// StateDir is the subdirectory of the data dir holding the collector's
// high-water marks and the sinks' cursors.
const StateDir = "collector"

// Options configure Open.
type Options struct {
	// DataDir holds the event log (events/) and the collector state
	// (collector/). Required; it must belong to one process at a time.
	DataDir string
	// Sinks are --audit-sink URLs; each gets every event at least once.
	Sinks []string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Clock drives the deliverers' retries and batching; nil means the
	// system clock.
	Clock clock.Clock
}

// Pipeline is an open event log with its collector and deliverers. It is
// a prometheus.Collector for all of their metrics.
type Pipeline struct {
	// Events is the durable log; Collector appends proxies' events to it.
	Events    *eventlog.Log
	Collector *collector.Server

	log        *slog.Logger
	deliverers []*sink.Deliverer
	sinks      []sink.Sink // closed by Close, after the deliverers stopped
	sinkNames  []string    // sink.Display of each URL: no credentials
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
	verifying  chan struct{} // one AuditVerifyHandler check at a time
}

// Open opens (or creates) the log and the collector state and parses every
// sink URL. Nothing runs until Start. A bad sink URL fails Open naming it,
// and nothing is left open.
func Open(opts Options) (*Pipeline, error) {
	if opts.DataDir == "" {
		return nil, errors.New("pipeline: no data dir")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	events, err := eventlog.Open(filepath.Join(opts.DataDir, eventlog.DirName), eventlog.Options{Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	state := filepath.Join(opts.DataDir, StateDir)
	col, err := collector.New(events, state, opts.Logger)
	if err != nil {
		events.Close()
		return nil, fmt.Errorf("collector: %w", err)
	}
	p := &Pipeline{Events: events, Collector: col, log: opts.Logger, verifying: make(chan struct{}, 1)}
	for i, u := range opts.Sinks {
		// Two deliverers of one URL would share its cursor file.
		if slices.Contains(opts.Sinks[:i], u) {
			p.Close()
			return nil, fmt.Errorf("--audit-sink %s is given twice; give each sink once", sink.Display(u))
		}
		s, err := sink.Parse(u, sink.Options{})
		if err != nil {
			p.Close()
			return nil, err
		}
		p.sinks = append(p.sinks, s)
		d, err := sink.NewDeliverer(sink.DelivererConfig{Name: u, Sink: s, Log: events, Dir: state, Logger: opts.Logger, Clock: opts.Clock})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("--audit-sink %s: %w", sink.Display(u), err)
		}
		p.deliverers = append(p.deliverers, d)
		name := sink.Display(u)
		if slices.Contains(p.sinkNames, name) {
			// Two URLs differing only in what Display hides.
			name = fmt.Sprintf("%s#%d", name, len(p.sinkNames)+1)
		}
		p.sinkNames = append(p.sinkNames, name)
	}
	return p, nil
}

// Start runs the deliverers in the background until Close.
func (p *Pipeline) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for _, d := range p.deliverers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := d.Run(ctx); err != nil && ctx.Err() == nil {
				p.log.Error("audit sink stopped", "err", err)
			}
		}()
	}
}

// Close stops the deliverers, closes the collector (stop the gRPC server
// first: see collector.Server.Close) and then the log. Calling it again
// returns the first result.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		p.wg.Wait()
		err := p.Collector.Close()
		for _, s := range p.sinks {
			if cerr := s.Close(); cerr != nil {
				p.log.Warn("close audit sink", "err", cerr)
			}
		}
		if cerr := p.Events.Close(); err == nil {
			err = cerr
		}
		p.closeErr = err
	})
	return p.closeErr
}
