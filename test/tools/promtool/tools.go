//go:build tools

// Package promtool pins the Prometheus release whose promtool `make test`
// runs over deploy/monitoring. It is its own module so Prometheus and its
// dependencies never enter Backhaul's go.mod; the Makefile builds the
// command from the module cache once and again only when this go.mod or
// go.sum changes.
package promtool

import _ "github.com/prometheus/prometheus/cmd/promtool"
