package propagation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Results of a sync of one Propagation in one cluster, the result label of
// backhaul_propagation_syncs_total.
const (
	// ResultApplied: the copy was written (server-side apply).
	ResultApplied = "applied"
	// ResultUnchanged: the copy was known to be current; nothing written.
	ResultUnchanged = "unchanged"
	// ResultPending: the cluster waits (not connected, not Ready, not
	// registered); nothing written.
	ResultPending = "pending"
	// ResultFailed: the member refused the copy or could not be reached.
	ResultFailed = "failed"
	// ResultDeleted: a copy was deleted (the cluster left the placement,
	// the Propagation was deleted, or the template no longer names it).
	ResultDeleted = "deleted"
)

// Metrics are the Propagation controller's series. Create them once per
// process (a hub runs one controller per leadership term, all feeding the
// same series) with [NewMetrics]; a nil *Metrics records nothing.
type Metrics struct {
	syncs         *prometheus.CounterVec
	applyDuration *prometheus.HistogramVec
	drift         prometheus.Counter
	managed       prometheus.Gauge
	watches       prometheus.Gauge
	refusals      prometheus.Counter
	queue         queueMetrics
}

// NewMetrics registers the controller's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_propagation_syncs_total",
			Help: "Syncs of one Propagation in one member cluster, by result: applied (written), unchanged (known current, not written), pending, failed, deleted.",
		}, []string{"result"}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "backhaul_propagation_apply_duration_seconds",
			Help:    "Time of one server-side apply to a member through its tunnel, by result (applied, failed).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"result"}),
		drift: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_propagation_drift_total",
			Help: "Copies found changed or deleted in a member by someone else (from the member watches) and re-applied.",
		}),
		managed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_propagation_objects_managed",
			Help: "Copies the controller knows it applied, one per Propagation and member cluster.",
		}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backhaul_propagation_member_watches",
			Help: "Watches of propagated kinds open in member clusters (one per cluster and kind).",
		}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_propagation_member_watch_refusals_total",
			Help: "Members not watched because they held more labelled objects of a kind than the controller watches (until their tunnel comes back).",
		}),
		queue: queueMetrics{
			depth: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "backhaul_propagation_queue_depth",
				Help: "Propagations waiting in the controller's queue.",
			}),
			adds: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "backhaul_propagation_queue_adds_total",
				Help: "Propagations added to the controller's queue.",
			}),
			latency: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "backhaul_propagation_queue_wait_seconds",
				Help:    "How long a Propagation waited in the queue before a worker took it.",
				Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
			}),
			work: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "backhaul_propagation_reconcile_duration_seconds",
				Help:    "How long one reconcile of a Propagation took (all its clusters).",
				Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
			}),
			unfinished: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "backhaul_propagation_queue_unfinished_work_seconds",
				Help: "Seconds of work in progress not yet finished by the controller's workers.",
			}),
			longest: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "backhaul_propagation_queue_longest_running_seconds",
				Help: "Seconds the longest running reconcile has been running.",
			}),
			retries: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "backhaul_propagation_queue_retries_total",
				Help: "Propagations requeued with backoff after a failure.",
			}),
		},
	}
	for _, r := range []string{ResultApplied, ResultUnchanged, ResultPending, ResultFailed, ResultDeleted} {
		m.syncs.WithLabelValues(r)
	}
	for _, r := range []string{ResultApplied, ResultFailed} {
		m.applyDuration.WithLabelValues(r)
	}
	q := m.queue
	reg.MustRegister(m.syncs, m.applyDuration, m.drift, m.managed, m.watches, m.refusals,
		q.depth, q.adds, q.latency, q.work, q.unfinished, q.longest, q.retries)
	return m
}

func (m *Metrics) synced(result string) {
	if m != nil {
		m.syncs.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) applied(result string, took time.Duration) {
	if m != nil {
		m.applyDuration.WithLabelValues(result).Observe(took.Seconds())
	}
}

func (m *Metrics) drifted() {
	if m != nil {
		m.drift.Inc()
	}
}

func (m *Metrics) setManaged(n int) {
	if m != nil {
		m.managed.Set(float64(n))
	}
}

func (m *Metrics) addWatches(n int) {
	if m != nil {
		m.watches.Add(float64(n))
	}
}

func (m *Metrics) watchRefused() {
	if m != nil {
		m.refusals.Inc()
	}
}

// queueProvider hands the controller's work queue the series above,
// whatever name it asks for: one queue per leadership term, one set of
// series per process.
func (m *Metrics) queueProvider() workqueue.MetricsProvider {
	if m == nil {
		return nil
	}
	return m.queue
}

// queueMetrics implements workqueue.MetricsProvider with fixed series.
type queueMetrics struct {
	depth      prometheus.Gauge
	adds       prometheus.Counter
	latency    prometheus.Histogram
	work       prometheus.Histogram
	unfinished prometheus.Gauge
	longest    prometheus.Gauge
	retries    prometheus.Counter
}

var _ workqueue.MetricsProvider = queueMetrics{}

func (q queueMetrics) NewDepthMetric(string) workqueue.GaugeMetric       { return q.depth }
func (q queueMetrics) NewAddsMetric(string) workqueue.CounterMetric      { return q.adds }
func (q queueMetrics) NewLatencyMetric(string) workqueue.HistogramMetric { return q.latency }
func (q queueMetrics) NewRetriesMetric(string) workqueue.CounterMetric   { return q.retries }
func (q queueMetrics) NewWorkDurationMetric(string) workqueue.HistogramMetric {
	return q.work
}
func (q queueMetrics) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return q.unfinished
}
func (q queueMetrics) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return q.longest
}
