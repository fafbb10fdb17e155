package fleet

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster states of backhaul_hub_clusters. They overlap: connected and
// disconnected partition the registered clusters; not_ready counts those
// whose Ready condition is not True (disconnected ones included);
// flapping those with status.tunnel.flapping.
const (
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateNotReady     = "not_ready"
	StateFlapping     = "flapping"
)

var clusterStates = []string{StateConnected, StateDisconnected, StateNotReady, StateFlapping}

// MetricsConfig says which fleet series the hub exports.
type MetricsConfig struct {
	// PerCluster exports series labelled by cluster. Off by default: each
	// cluster is four more series in every scrape.
	PerCluster bool
	// PerClusterLimit bounds the clusters labelled; those beyond it get no
	// series of their own and are counted in
	// backhaul_hub_cluster_series_omitted. A cluster keeps its series
	// while it is registered; a slot freed by a removed cluster goes to
	// the first unlabelled one by name.
	PerClusterLimit int
}

// DefaultMetricsConfig labels nothing by cluster.
func DefaultMetricsConfig() MetricsConfig { return MetricsConfig{PerClusterLimit: 1000} }

// Validate checks the settings.
func (c MetricsConfig) Validate() error {
	if c.PerClusterLimit < 1 {
		return errors.New("per-cluster metrics limit must be at least 1")
	}
	return nil
}

// Metrics are the fleet's health series, exported by the replica that
// writes Cluster status (the leader) from what it wrote; the other
// replicas export zeros and no per-cluster series, so dashboards and
// alerts take max() over replicas.
type Metrics struct {
	cfg MetricsConfig
	now func() time.Time

	states, longest, omitted         *prometheus.Desc
	rtt, connected, reconnects, strm *prometheus.Desc

	mu       sync.Mutex
	leading  bool
	clusters map[string]clusterHealth
	labelled map[string]bool
}

// clusterHealth is what the series say of one cluster.
type clusterHealth struct {
	connected, ready, flapping bool
	rtt                        time.Duration
	reconnects, streams        int32
	// disconnectedSince: when its last session ended (or it was
	// registered); zero while connected.
	disconnectedSince time.Time
}

// NewMetrics registers the fleet's series on reg.
func NewMetrics(reg prometheus.Registerer, cfg MetricsConfig) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Metrics{
		cfg: cfg, now: time.Now, clusters: map[string]clusterHealth{}, labelled: map[string]bool{},
		states: prometheus.NewDesc("backhaul_hub_clusters",
			"Registered clusters by state (connected, disconnected, not_ready, flapping; they overlap), as the replica writing Cluster status sees them; other replicas export 0: use max().", []string{"state"}, nil),
		longest: prometheus.NewDesc("backhaul_hub_cluster_longest_disconnected_seconds",
			"Longest time any registered cluster has had no agent session (0: all connected), from the replica writing Cluster status; other replicas export 0: use max().", nil, nil),
		omitted: prometheus.NewDesc("backhaul_hub_cluster_series_omitted",
			"Clusters left without per-cluster series because --metrics-per-cluster-limit was reached.", nil, nil),
		rtt: prometheus.NewDesc("backhaul_hub_cluster_rtt_seconds",
			"Moving average of the cluster's tunnel round trip (--metrics-per-cluster).", []string{"cluster"}, nil),
		connected: prometheus.NewDesc("backhaul_hub_cluster_connected",
			"1 while an agent of the cluster holds a session to any replica (--metrics-per-cluster).", []string{"cluster"}, nil),
		reconnects: prometheus.NewDesc("backhaul_hub_cluster_reconnects",
			"Sessions of the cluster lost and replaced within the tunnel health window (--metrics-per-cluster).", []string{"cluster"}, nil),
		strm: prometheus.NewDesc("backhaul_hub_cluster_streams",
			"Streams open through the cluster's sessions (--metrics-per-cluster).", []string{"cluster"}, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

var _ prometheus.Collector = (*Metrics)(nil)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.states
	ch <- m.longest
	if m.cfg.PerCluster {
		for _, d := range []*prometheus.Desc{m.omitted, m.rtt, m.connected, m.reconnects, m.strm} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[string]int{}
	var longest time.Duration
	now := m.now()
	for _, c := range m.clusters {
		if c.connected {
			counts[StateConnected]++
		} else {
			counts[StateDisconnected]++
			if !c.disconnectedSince.IsZero() {
				longest = max(longest, now.Sub(c.disconnectedSince))
			}
		}
		if !c.ready {
			counts[StateNotReady]++
		}
		if c.flapping {
			counts[StateFlapping]++
		}
	}
	for _, s := range clusterStates {
		ch <- prometheus.MustNewConstMetric(m.states, prometheus.GaugeValue, float64(counts[s]), s)
	}
	ch <- prometheus.MustNewConstMetric(m.longest, prometheus.GaugeValue, longest.Seconds())
	if !m.cfg.PerCluster {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.omitted, prometheus.GaugeValue, float64(len(m.clusters)-len(m.labelled)))
	for name := range m.labelled {
		c := m.clusters[name]
		ch <- prometheus.MustNewConstMetric(m.rtt, prometheus.GaugeValue, c.rtt.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(m.connected, prometheus.GaugeValue, boolValue(c.connected), name)
		ch <- prometheus.MustNewConstMetric(m.reconnects, prometheus.GaugeValue, float64(c.reconnects), name)
		ch <- prometheus.MustNewConstMetric(m.strm, prometheus.GaugeValue, float64(c.streams), name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// lead starts (true) or ends this replica's term as the status writer:
// out of it, it exports zeros and no per-cluster series.
func (m *Metrics) lead(on bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leading = on
	clear(m.clusters)
	clear(m.labelled)
}

// set records what was written of cluster.
func (m *Metrics) set(cluster string, c clusterHealth) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading {
		return
	}
	m.clusters[cluster] = c
	if !m.labelled[cluster] && len(m.labelled) < m.cfg.PerClusterLimit {
		m.labelled[cluster] = true
	}
}

// retain forgets the clusters not in registered (removed ones lose their
// series) and gives the slots they freed to unlabelled clusters.
func (m *Metrics) retain(registered []string) {
	if m == nil {
		return
	}
	keep := make(map[string]bool, len(registered))
	for _, n := range registered {
		keep[n] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.DeleteFunc(m.clusters, func(n string, _ clusterHealth) bool { return !keep[n] })
	maps.DeleteFunc(m.labelled, func(n string, _ bool) bool { return !keep[n] })
	if len(m.labelled) >= m.cfg.PerClusterLimit || len(m.labelled) == len(m.clusters) {
		return
	}
	for _, n := range slices.Sorted(maps.Keys(m.clusters)) {
		if len(m.labelled) >= m.cfg.PerClusterLimit {
			break
		}
		m.labelled[n] = true
	}
}
