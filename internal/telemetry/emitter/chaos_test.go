package emitter_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/telemetry/collector/collectortest"
	"github.com/trellismesh/trellis/internal/telemetry/emitter"
)

// Random sequences of traffic bursts, collector outages, a stuck collector
// (accepting streams, never acknowledging) and proxy restarts (all
// graceful) deliver every event exactly once, in order.
func TestRandomOutagesAndRestarts(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			pki := collectortest.NewPKI(t)
			cfg := collectortest.Config{Addr: freeAddr(t), StateDir: filepath.Join(t.TempDir(), "state"), LogDir: filepath.Join(t.TempDir(), "log")}
			var c *collectortest.Collector
			var stuck *blockingAppender
			opts := emitter.Options{SpoolDir: filepath.Join(t.TempDir(), "spool"), MemoryLimit: 40 + rng.IntN(200), SpoolLimitBytes: 8 << 20}
			p := startProxy(t, pki, cfg.Addr, opts)
			var emitted, dropped uint64
			next := 0
			var log []string
			for range 30 {
				switch rng.IntN(6) {
				case 0, 1, 2:
					n := rng.IntN(400)
					log = append(log, fmt.Sprintf("emit %d", n))
					emitPaced(t, p, next, next+n, int64(opts.MemoryLimit*3/4))
					next += n
				case 3:
					switch {
					case c == nil && rng.IntN(3) == 0:
						log = append(log, "collector stuck")
						c, stuck = startStuckCollector(t, pki, cfg)
					case c == nil:
						log = append(log, "collector up")
						c = pki.StartCollector(t, cfg)
					default:
						log = append(log, "collector down")
						if stuck != nil {
							stuck.unblock()
							stuck = nil
						}
						c.Stop(t)
						c = nil
					}
				case 4:
					log = append(log, "proxy restart")
					if err := p.Close(); err != nil {
						t.Fatal(err)
					}
					emitted += p.Stats().Emitted
					dropped += p.Dropped()
					p = startProxy(t, pki, cfg.Addr, opts)
				case 5:
					d := time.Duration(rng.IntN(40)) * time.Millisecond
					log = append(log, fmt.Sprint("sleep ", d))
					time.Sleep(d)
				}
			}
			if stuck != nil {
				stuck.unblock()
				c.Stop(t)
				c = nil
			}
			if c == nil {
				c = pki.StartCollector(t, cfg)
			}
			p.flush(t)
			emitted += p.Stats().Emitted
			dropped += p.Dropped()
			if dropped != 0 {
				t.Errorf("dropped %d events; steps: %v", dropped, log)
			}
			seqs := seqsOf(c.Records(t), p.ID)
			if uint64(len(seqs)) != emitted-dropped {
				t.Errorf("delivered %d events, want %d; steps: %v", len(seqs), emitted-dropped, log)
			}
			checkExactlyOnce(t, seqs, 1, emitted)
		})
	}
}
