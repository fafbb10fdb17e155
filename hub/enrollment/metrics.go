package enrollment

import "github.com/prometheus/client_golang/prometheus"

// Metrics count certificate requests; labels are closed sets.
type Metrics struct {
	enrollments *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "backhaul_hub_enrollments_total", Help: "Enrollment requests (enroll, renew, status) by result: ok, unauthorized, forbidden, bad_csr, error, rate_limited_source, rate_limited_global.",
	}, []string{"kind", "result"})}
	reg.MustRegister(m.enrollments)
	return m
}

func (m *Metrics) request(kind, result string) { m.enrollments.WithLabelValues(kind, result).Inc() }
