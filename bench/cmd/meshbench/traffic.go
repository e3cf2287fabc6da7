package main

import (
	"context"
	"fmt"
	"time"
)

// The trellis-traffic topology is the trellis pair with a TrafficPolicy
// (timeout, retries with a budget, outlier detection, peak-EWMA) and a
// canary Route (a header rule the load does not match, then a weighted
// rule back to the service) on its destination: what traffic management
// costs a request that needs none of it.
const trafficConfig = `apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: upstream-tp, namespace: bench}
spec:
  selector: {service: upstream-tp}
  timeout: 5s
  retries: {attempts: 2, perTryTimeout: 1s, on: [5xx, reset, connect-failure], budget: {ratio: 0.2, minPerSecond: 10}}
  outlierDetection: {consecutive5xx: 5}
  loadBalancer: {policy: peak-ewma}
---
apiVersion: trellis.dev/v1alpha1
kind: Route
metadata: {name: upstream-tp, namespace: bench}
spec:
  service: upstream-tp
  rules:
  - matches: [{headers: {x-canary: "1"}}]
    backends: [{service: upstream-tp-v2, weight: 100}]
  - backends: [{service: upstream-tp, weight: 100}]
`

// startTraffic starts the trellis-traffic pair in front of app.
func (e *env) startTraffic(ctx context.Context, app string) (*topology, error) {
	tp, err := e.control(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := e.runCLI(tp.cli, trafficConfig, "apply", "-f", "-"); err != nil {
		return nil, fmt.Errorf("trellis-traffic: %w", err)
	}
	return tp.start(ctx, "trellis-traffic", "upstream-tp", "client-tp", "http", app, func(front string, ps ...*proc) error {
		return awaitOK(ctx, front, 1024, 20*time.Second, ps...)
	})
}
