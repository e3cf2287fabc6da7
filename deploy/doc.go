// Package deploy holds no code, only tests of the files beside it: the
// Grafana dashboards (grafana/*.json) and the Prometheus alerting rules
// (prometheus/trellis-alerts.yaml with its promtool unit tests). The tests
// check the rules with promtool (Debian's prometheus package; make deps
// installs it), that every dashboard panel has the ${datasource} variable and
// queries that parse, and that every metric and label the dashboards and
// rules name is one a real control plane and real proxies export
// (docs/dashboards.md).
//
// Nothing may import this package.
package deploy
