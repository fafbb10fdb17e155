// Package hub declares metrics the way Backhaul's code does, for the
// checker's own tests.
package hub

import "github.com/prometheus/client_golang/prometheus"

const reasonBusy = "busy"

func metrics(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_test_requests_total", Help: "Requests by result.",
		}, []string{"result"}),
		prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_test_sessions", Help: "Sessions.",
		}),
		prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "backhaul_test_rtt_seconds", Help: "Round trips.",
		}, []string{"kind"}),
	)
	_ = []string{"ok", "refused", reasonBusy, "rate_limited_" + "x"}
}

type collector struct{ states *prometheus.Desc }

func newCollector() *collector {
	return &collector{states: prometheus.NewDesc("backhaul_test_clusters", "Clusters by state.", []string{"state"}, nil)}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.states }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.states, prometheus.GaugeValue, 1, "connected")
}
