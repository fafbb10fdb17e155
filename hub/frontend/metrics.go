package frontend

import (
	"github.com/prometheus/client_golang/prometheus"

	"backhaul.io/backhaul/hub/session"
)

// Metrics are the front ends' series. Refusals are counted with the
// tunnel's (session.Metrics.Refused), so one series says why any stream
// was not carried.
type Metrics struct {
	requests *prometheus.CounterVec
	tunnel   *session.Metrics
	// Limits' series (limits.go): streams callers hold, by front end
	// only (a per-caller label would be unbounded), and the memory budget.
	streams      *prometheus.GaugeVec
	memoryLimit  prometheus.Gauge
	memoryRefuse prometheus.Gauge
}

// NewMetrics registers the front ends' series on reg; refusals go to
// tunnel's.
func NewMetrics(reg prometheus.Registerer, tunnel *session.Metrics) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_gateway_requests_total", Help: "Gateway requests by response code class.",
		}, []string{"code"}),
		tunnel: tunnel,
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backhaul_hub_caller_streams", Help: "Streams callers hold through this replica's front ends now, as counted against --max-streams-per-caller and --max-streams-per-cluster.",
		}, []string{"front_end"}),
		memoryLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_memory_limit_bytes", Help: "The memory limit new streams are budgeted against (0: none known, no budget).",
		}),
		memoryRefuse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_memory_budget_bytes", Help: "Memory in use above which new streams are refused (503, reason memory in backhaul_hub_errors_total).",
		}),
	}
	reg.MustRegister(m.requests, m.streams, m.memoryLimit, m.memoryRefuse)
	return m
}

func (m *Metrics) request(codeClass string) { m.requests.WithLabelValues(codeClass).Inc() }
func (m *Metrics) refused(reason string)    { m.tunnel.Refused(reason) }

func (m *Metrics) callerStreams(frontEnd string, delta float64) {
	m.streams.WithLabelValues(frontEnd).Add(delta)
}

func (m *Metrics) memoryBudget(limit, refuseAbove uint64) {
	m.memoryLimit.Set(float64(limit))
	m.memoryRefuse.Set(float64(refuseAbove))
}
