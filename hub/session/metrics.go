package session

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a stream was not carried, the label values of
// backhaul_hub_errors_total. They are a closed set (with the tunnel's dial
// codes, [tunnel.Code.String]) so the series stays bounded; every front
// end counts its refusals here, so one series says why anything failed.
const (
	ReasonUnknownCluster = "unknown_cluster"
	ReasonNotConnected   = "not_connected"
	ReasonUnauthorized   = "unauthenticated"
	ReasonForbidden      = "forbidden"
	ReasonAgentAuth      = "agent_unauthenticated"
	ReasonVersion        = "version"
	ReasonBadGateway     = "bad_gateway"
	ReasonNoRoute        = "no_route"
	ReasonTimeout        = "timeout"
	ReasonCanceled       = "canceled"
)

// Metrics are the tunnel side's Prometheus series: sessions, upgrades,
// streams, bytes, dial latency and refusals.
type Metrics struct {
	sessions      prometheus.Gauge
	connects      *prometheus.CounterVec
	streamsOpened *prometheus.CounterVec
	streamsActive prometheus.Gauge
	bytes         *prometheus.CounterVec
	bytesTx       prometheus.Counter
	bytesRx       prometheus.Counter
	dialLatency   *prometheus.HistogramVec
	errors        *prometheus.CounterVec
	expired       *prometheus.CounterVec
	rtt           prometheus.Histogram
	disconnects   *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_sessions", Help: "Agent tunnel sessions currently connected.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_session_connects_total", Help: "Agent upgrade attempts by result.",
		}, []string{"result"}),
		streamsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_streams_opened_total", Help: "Streams opened to agents that the agent accepted, by kind.",
		}, []string{"kind"}),
		streamsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_streams_active", Help: "Streams to agents currently open.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_stream_bytes_total", Help: "Payload bytes through tunnel streams (tx: hub to agent).",
		}, []string{"direction"}),
		dialLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "backhaul_hub_dial_duration_seconds",
			Help:    "Time from opening a stream to the agent's answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_errors_total", Help: "Failed gateway requests and tunnel upgrades by reason.",
		}, []string{"reason"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_sessions_expired_total",
			Help: "Agent sessions the hub ended because their certificate expired or they reached --session-max-age, by reason.",
		}, []string{"reason"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backhaul_hub_tunnel_rtt_seconds",
			Help:    "Round trips through agent tunnels, each one the hub measured in the background, of every cluster together.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_session_disconnects_total",
			Help: "Agent sessions that ended, by reason: agent_closed, keepalive_timeout, connection_lost, expired, revoked, drained, replaced, hub_shutdown, duplicate.",
		}, []string{"reason"}),
	}
	m.bytesTx, m.bytesRx = m.bytes.WithLabelValues("tx"), m.bytes.WithLabelValues("rx")
	reg.MustRegister(m.sessions, m.connects, m.streamsOpened, m.streamsActive, m.bytes, m.dialLatency, m.errors, m.expired,
		m.rtt, m.disconnects)
	return m
}

// Refused counts a stream or upgrade that was not carried, by reason (one
// of the Reason constants or a tunnel dial code).
func (m *Metrics) Refused(reason string) { m.errors.WithLabelValues(reason).Inc() }

func (m *Metrics) sessionUp()            { m.sessions.Inc() }
func (m *Metrics) sessionDown()          { m.sessions.Dec() }
func (m *Metrics) connect(result string) { m.connects.WithLabelValues(result).Inc() }

func (m *Metrics) sessionExpired(reason string) { m.expired.WithLabelValues(reason).Inc() }

// disconnected counts a session that ended, by a Disconnect constant.
func (m *Metrics) disconnected(reason string) { m.disconnects.WithLabelValues(reason).Inc() }

// observeRTT records one background round trip.
func (m *Metrics) observeRTT(d time.Duration) { m.rtt.Observe(d.Seconds()) }

// streamOpening counts a stream opened; streamSetUp times its set-up, to
// the agent's reply, once that is in.
func (m *Metrics) streamOpening() {
	m.streamsActive.Inc()
}

func (m *Metrics) streamSetUp(kind string, seconds float64) {
	m.streamsOpened.WithLabelValues(kind).Inc()
	m.dialLatency.WithLabelValues(kind).Observe(seconds)
}
