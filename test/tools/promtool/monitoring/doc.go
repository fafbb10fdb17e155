// Package monitoring checks deploy/monitoring against the code, so the
// dashboard and the alerts cannot rot: every PromQL expression in the
// Grafana dashboard and the rule files parses with Prometheus's own
// parser, names only series that Backhaul's Go sources (or the Go and
// process collectors they register) export, with labels those series
// have and label values the code uses; rate() and friends see only
// counters; the dashboard is a well-formed Grafana dashboard; the
// PrometheusRule manifests carry exactly the rule files' groups; and every
// alert has a promtool unit test that makes it fire and one that does
// not.
//
// It lives in the promtool tools module (test/tools/promtool) so that
// github.com/prometheus/prometheus never enters Backhaul's go.mod; `make
// monitoring` runs its tests next to `promtool check rules` and `promtool
// test rules`.
package monitoring
