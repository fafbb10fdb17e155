package agent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's Prometheus series.
type Metrics struct {
	connected  prometheus.Gauge
	sessions   prometheus.Gauge
	drains     prometheus.Counter
	reconnects prometheus.Counter
	streams    *prometheus.CounterVec
	refusals   *prometheus.CounterVec
}

// NewMetrics registers the agent's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_agent_connected", Help: "1 while at least one tunnel session to the hub is up.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_agent_sessions", Help: "Tunnel sessions to the hub, draining ones included.",
		}),
		drains: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_agent_drains_total", Help: "Sessions a going-away hub replica asked to drain.",
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
	reg.MustRegister(m.connected, m.sessions, m.drains, m.reconnects, m.streams, m.refusals)
	return m
}

// setSessions records how many tunnel sessions are up.
func (m *Metrics) setSessions(n int) {
	m.sessions.Set(float64(n))
	if n > 0 {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}
