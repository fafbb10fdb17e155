package hub

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons are a closed set so the errors_total label stays bounded.
const (
	reasonUnknownCluster = "unknown_cluster"
	reasonNotConnected   = "not_connected"
	reasonUnauthorized   = "unauthenticated"
	reasonForbidden      = "forbidden"
	reasonAgentAuth      = "agent_unauthenticated"
	reasonVersion        = "version"
	reasonBadGateway     = "bad_gateway"
	reasonNoRoute        = "no_route"
)

// Metrics are the hub's Prometheus series, registered on an injected registry.
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
	requests      *prometheus.CounterVec
	enrollments   *prometheus.CounterVec
}

// NewMetrics registers the hub's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_sessions", Help: "Agent tunnel sessions currently connected.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_session_connects_total", Help: "Agent upgrade attempts by result.",
		}, []string{"result"}),
		streamsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_streams_opened_total", Help: "Streams opened to agents by kind.",
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
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_gateway_requests_total", Help: "Gateway requests by response code class.",
		}, []string{"code"}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_enrollments_total", Help: "Agent certificate requests (enroll, renew) by result.",
		}, []string{"kind", "result"}),
	}
	m.bytesTx, m.bytesRx = m.bytes.WithLabelValues("tx"), m.bytes.WithLabelValues("rx")
	reg.MustRegister(m.sessions, m.connects, m.streamsOpened, m.streamsActive, m.bytes, m.dialLatency, m.errors, m.requests, m.enrollments)
	return m
}

func (m *Metrics) sessionUp()               { m.sessions.Inc() }
func (m *Metrics) sessionDown()             { m.sessions.Dec() }
func (m *Metrics) connect(result string)    { m.connects.WithLabelValues(result).Inc() }
func (m *Metrics) failure(reason string)    { m.errors.WithLabelValues(reason).Inc() }
func (m *Metrics) request(codeClass string) { m.requests.WithLabelValues(codeClass).Inc() }
func (m *Metrics) enrollment(kind, result string) {
	m.enrollments.WithLabelValues(kind, result).Inc()
}

func (m *Metrics) streamOpened(kind string, seconds float64) {
	m.streamsOpened.WithLabelValues(kind).Inc()
	m.dialLatency.WithLabelValues(kind).Observe(seconds)
	m.streamsActive.Inc()
}
