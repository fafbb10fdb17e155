package agent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's Prometheus series.
type Metrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	streams    *prometheus.CounterVec
	refusals   *prometheus.CounterVec
}

// NewMetrics registers the agent's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_agent_connected", Help: "1 while the tunnel to the hub is up.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_agent_disconnects_total", Help: "Tunnel sessions lost or refused.",
		}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_agent_streams_total", Help: "Streams the hub opened, by kind and result code.",
		}, []string{"kind", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_agent_dial_refusals_total", Help: "TCP dials refused by the allowlist, by rule.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.connected, m.reconnects, m.streams, m.refusals)
	return m
}
