package audit

import "github.com/prometheus/client_golang/prometheus"

// Why an event was not written (the dropped counter's reason label).
const (
	// DropQueueFull: the writer was behind by Config.QueueSize events.
	DropQueueFull = "queue_full"
	// DropWriteFailed: the sink refused the write (disk full, say).
	DropWriteFailed = "write_failed"
	// DropClosed: the event came after the log was closed (a tunnel that
	// outlived the replica's shutdown).
	DropClosed = "closed"
)

// Metrics are the audit log's series.
type Metrics struct {
	written prometheus.Counter
	dropped *prometheus.CounterVec
}

// NewMetrics registers the audit log's series on reg; queued reports the
// events waiting for the writer.
func NewMetrics(reg prometheus.Registerer, queued func() int) *Metrics {
	m := &Metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "backhaul_hub_audit_events_total", Help: "Audit events written to the audit log.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backhaul_hub_audit_events_dropped_total",
			Help: "Audit events not written, by reason: queue_full (the writer was behind by --audit-log-queue-size events), write_failed, closed (after shutdown).",
		}, []string{"reason"}),
	}
	for _, r := range []string{DropQueueFull, DropWriteFailed, DropClosed} {
		m.dropped.WithLabelValues(r) // every reason present from the start, so rate() works on the first drop
	}
	reg.MustRegister(m.written, m.dropped, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "backhaul_hub_audit_queue_length", Help: "Audit events waiting for the writer.",
	}, func() float64 { return float64(queued()) }))
	return m
}

func (m *Metrics) wrote(n int)               { m.written.Add(float64(n)) }
func (m *Metrics) drop(reason string, n int) { m.dropped.WithLabelValues(reason).Add(float64(n)) }
