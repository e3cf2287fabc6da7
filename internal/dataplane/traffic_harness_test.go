package dataplane_test

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/dataplane"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// The traffic tests give catalog.shop several endpoints: the mesh's own
// server proxy and more server proxies started by addServer, each with
// its own app, all serving the catalog identity.

// addServer starts another catalog server proxy in front of the app at
// appAddr and returns its inbound address.
func (m *mesh) addServer(appAddr string) string {
	m.t.Helper()
	l := listen(m.t)
	in := dataplane.NewInbound(dataplane.DataPlaneConfig{
		Identity: m.pki.identity(catalogID), Snapshot: m.snap.get,
		Service: "catalog", Namespace: "shop", Protocol: m.opts.protocol, AppAddr: appAddr,
		Logger: m.logs.Logger.With("proxy", "server "+l.Addr().String()),
	})
	serve(m.t, "inbound "+l.Addr().String(), func() error { return in.Serve(l) })
	m.t.Cleanup(func() { shutdown(m.t, in.Shutdown) })
	return l.Addr().String()
}

// setCatalog pushes a snapshot where catalog.shop has the endpoints addrs
// and the TrafficPolicy tp (nil: none).
func (m *mesh) setCatalog(tp *meshconfig.TrafficPolicy, addrs ...string) {
	snap := *m.snap.get()
	svc := service("catalog", "shop", m.opts.protocol, []spiffeid.ID{catalogID}, addrs...)
	svc.Traffic = tp
	snap.Services = map[string]*meshconfig.Service{svc.Key(): svc}
	m.snap.set(&snap)
}

// namedApp answers 200 with X-Endpoint: name after delay, or with fail's
// status while fail is non-zero; it counts requests and the most it
// had at once.
type namedApp struct {
	name           string
	delay          time.Duration
	fail           atomic.Int32
	hits           atomic.Int64
	busy, mostBusy atomic.Int64
}

func (a *namedApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	n := a.busy.Add(1)
	defer a.busy.Add(-1)
	for {
		m := a.mostBusy.Load()
		if n <= m || a.mostBusy.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(a.delay)
	w.Header().Set("X-Endpoint", a.name)
	if code := a.fail.Load(); code != 0 {
		w.WriteHeader(int(code))
		return
	}
	_, _ = w.Write([]byte(a.name))
}

// outcome is one request's result in a load run.
type outcome struct {
	code     int
	endpoint string
	body     string
	took     time.Duration
	err      error
}

// load runs n calls of do with concurrency c and returns their outcomes in
// order of issue.
func load(n, c int, do func(i int) outcome) []outcome {
	out := make([]outcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				start := time.Now()
				o := do(i)
				o.took = time.Since(start)
				out[i] = o
			}
		}()
	}
	wg.Wait()
	return out
}

// p99 is the 99th percentile of the outcomes' durations that keep says.
func p99(outs []outcome, keep func(outcome) bool) time.Duration {
	var ds []time.Duration
	for _, o := range outs {
		if keep == nil || keep(o) {
			ds = append(ds, o.took)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*99+99)/100-1]
}

// byEndpoint counts outcomes per endpoint name.
func byEndpoint(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		m[o.endpoint]++
	}
	return m
}
