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
}

// NewMetrics registers the front ends' series on reg; refusals go to
// tunnel's.
func NewMetrics(reg prometheus.Registerer, tunnel *session.Metrics) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_gateway_requests_total", Help: "Gateway requests by response code class.",
		}, []string{"code"}),
		tunnel: tunnel,
	}
	reg.MustRegister(m.requests)
	return m
}

func (m *Metrics) request(codeClass string) { m.requests.WithLabelValues(codeClass).Inc() }
func (m *Metrics) refused(reason string)    { m.tunnel.Refused(reason) }
