package statuspage

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the status page's own costs: snapshot builds and the
// reviews it asks for. Labels are closed sets.
type Metrics struct {
	build    prometheus.Histogram
	clusters prometheus.Gauge
	reviews  *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		build: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backhaul_hub_status_page_snapshot_seconds",
			Help:    "Time to build one status page snapshot of the fleet (in the background, while someone looks).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
		clusters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_hub_status_page_snapshot_clusters",
			Help: "Clusters in the last status page snapshot.",
		}),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_status_page_reviews_total",
			Help: "Authorization checks the status page asked for (scope=all: may the caller reach every cluster; scope=cluster: one cluster), before the review cache.",
		}, []string{"scope"}),
	}
	reg.MustRegister(m.build, m.clusters, m.reviews)
	return m
}

func (m *Metrics) built(d time.Duration, clusters int) {
	if m != nil {
		m.build.Observe(d.Seconds())
		m.clusters.Set(float64(clusters))
	}
}

func (m *Metrics) reviewed(all bool) {
	if m == nil {
		return
	}
	scope := "cluster"
	if all {
		scope = "all"
	}
	m.reviews.WithLabelValues(scope).Inc()
}
