package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/telemetry/collector"
	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
	"github.com/trellismesh/trellis/internal/telemetry/sink"
)

// audit is the collector embedded in the control plane: the durable event
// log under DATA_DIR/events, the Telemetry gRPC service proxies stream to,
// and one Deliverer per --audit-sink. Control-plane events (resources,
// tokens, certificates) go through the same log.
type audit struct {
	log        *slog.Logger
	events     *eventlog.Log
	collector  *collector.Server
	deliverers []*sink.Deliverer
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	// self is the control plane's identity, the reporter of its events.
	self spiffeid.ID
}

func openAudit(cfg Config, self spiffeid.ID) (*audit, error) {
	events, err := eventlog.Open(filepath.Join(cfg.DataDir, eventlog.DirName), eventlog.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	col, err := collector.New(events, filepath.Join(cfg.DataDir, "collector"), cfg.Logger)
	if err != nil {
		events.Close()
		return nil, fmt.Errorf("collector: %w", err)
	}
	a := &audit{log: cfg.Logger, events: events, collector: col, self: self}
	for _, u := range cfg.AuditSinks {
		s, err := sink.Parse(u, sink.Options{})
		if err != nil {
			a.close()
			return nil, err
		}
		d, err := sink.NewDeliverer(sink.DelivererConfig{Name: u, Sink: s, Log: events, Dir: filepath.Join(cfg.DataDir, "collector"), Logger: cfg.Logger})
		if err != nil {
			a.close()
			return nil, fmt.Errorf("--audit-sink %s: %w", sink.Display(u), err)
		}
		a.deliverers = append(a.deliverers, d)
	}
	return a, nil
}

// start runs the deliverers.
func (a *audit) start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, d := range a.deliverers {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := d.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("audit sink stopped", "err", err)
			}
		}()
	}
}

// record appends one control-plane event; failures are logged, never
// returned to the API caller whose change already happened.
func (a *audit) record(ev *pb.Event) {
	if a == nil {
		return
	}
	if ev.Time == nil {
		ev.Time = timestamppb.New(time.Now())
	}
	if err := a.collector.AppendLocal(a.self, ev); err != nil {
		a.log.Error("audit event not recorded", "kind", ev.GetKind(), "err", err)
	}
}

func (a *audit) close() error {
	if a == nil {
		return nil
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	err := a.collector.Close()
	if cerr := a.events.Close(); err == nil {
		err = cerr
	}
	return err
}
