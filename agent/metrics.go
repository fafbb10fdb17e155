package agent

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"backhaul.io/backhaul/tunnel"
)

// Metrics are the agent's Prometheus series.
type Metrics struct {
	connected  prometheus.Gauge
	sessions   prometheus.Gauge
	drains     prometheus.Counter
	reconnects prometheus.Counter
	streams    *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	// Tunnel health, the agent's side of the hub's status.tunnel.
	reconnected prometheus.Counter
	rtt         prometheus.Histogram
	hubRefusals *prometheus.CounterVec
}

// Why the hub refused the agent's upgrade: the label values of
// backhaul_agent_hub_refusals_total.
const (
	HubRefusalUnauthorized = "unauthorized" // 401: no valid credential
	HubRefusalForbidden    = "forbidden"    // 403: a credential of another or a removed cluster
	HubRefusalVersion      = "version"      // 426, or no common tunnel protocol
	HubRefusalTooMany      = "too_many"     // 429: over a limit
	HubRefusalUnavailable  = "unavailable"  // 503: the replica drains or is busy with other handshakes
	HubRefusalOther        = "other"
)

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
		reconnected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_agent_reconnects_total",
			Help: "Tunnel sessions opened to replace one that was lost or that the hub asked to move (not the first ones).",
		}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backhaul_agent_tunnel_rtt_seconds",
			Help:    "Round trips to the hub through the tunnel, measured in the background.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		hubRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_agent_hub_refusals_total",
			Help: "Upgrades the hub refused, by reason: unauthorized, forbidden, version, too_many, unavailable, other.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.connected, m.sessions, m.drains, m.reconnects, m.streams, m.refusals, m.reconnected, m.rtt, m.hubRefusals)
	return m
}

// dialFailed counts err, a failed dial or a lost session, as a refusal
// when the hub refused the upgrade.
func (m *Metrics) dialFailed(err error) {
	if reason, ok := hubRefusal(err); ok {
		m.hubRefusals.WithLabelValues(reason).Inc()
	}
}

// hubRefusal says why the hub refused the upgrade err reports, if it did.
func hubRefusal(err error) (string, bool) {
	var he *tunnel.HandshakeError
	switch {
	case errors.As(err, &he):
		switch he.StatusCode {
		case http.StatusUnauthorized:
			return HubRefusalUnauthorized, true
		case http.StatusForbidden:
			return HubRefusalForbidden, true
		case http.StatusUpgradeRequired:
			return HubRefusalVersion, true
		case http.StatusTooManyRequests:
			return HubRefusalTooMany, true
		case http.StatusServiceUnavailable:
			return HubRefusalUnavailable, true
		}
		return HubRefusalOther, true
	case errors.Is(err, tunnel.ErrVersion):
		return HubRefusalVersion, true
	}
	return "", false
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
