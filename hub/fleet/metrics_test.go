package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
)

func newTestMetrics(t *testing.T, cfg MetricsConfig) (*Metrics, *prometheus.Registry, *testutil.FakeClock) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, cfg)
	require.NoError(t, err)
	clock := testutil.NewFakeClock()
	m.now = clock.Now
	return m, reg, clock
}

// series is the exposition of the named series, for exact comparisons.
func series(t *testing.T, reg *prometheus.Registry, expected string, names ...string) {
	t.Helper()
	assert.NoError(t, promtest.GatherAndCompare(reg, strings.NewReader(expected), names...))
}

func TestFleetMetricsStates(t *testing.T) {
	m, reg, clock := newTestMetrics(t, DefaultMetricsConfig())
	m.lead(true)
	now := clock.Now()
	m.set("a", clusterHealth{connected: true, ready: true, rtt: 20 * time.Millisecond})
	m.set("b", clusterHealth{connected: true, flapping: true, reconnects: 4})
	m.set("c", clusterHealth{disconnectedSince: now.Add(-10 * time.Minute)})
	m.set("d", clusterHealth{disconnectedSince: now.Add(-time.Minute)})
	series(t, reg, `
# HELP backhaul_hub_cluster_longest_disconnected_seconds Longest time any registered cluster has had no agent session (0: all connected), from the replica writing Cluster status; other replicas export 0: use max().
# TYPE backhaul_hub_cluster_longest_disconnected_seconds gauge
backhaul_hub_cluster_longest_disconnected_seconds 600
# HELP backhaul_hub_clusters Registered clusters by state (connected, disconnected, not_ready, flapping; they overlap), as the replica writing Cluster status sees them; other replicas export 0: use max().
# TYPE backhaul_hub_clusters gauge
backhaul_hub_clusters{state="connected"} 2
backhaul_hub_clusters{state="disconnected"} 2
backhaul_hub_clusters{state="flapping"} 1
backhaul_hub_clusters{state="not_ready"} 3
`, "backhaul_hub_clusters", "backhaul_hub_cluster_longest_disconnected_seconds")
	assert.Equal(t, 0, promtest.CollectAndCount(m, "backhaul_hub_cluster_rtt_seconds"), "no per-cluster series without the flag")

	// Out of its term, a replica exports zeros.
	m.lead(false)
	m.set("a", clusterHealth{connected: true})
	series(t, reg, `
# HELP backhaul_hub_cluster_longest_disconnected_seconds Longest time any registered cluster has had no agent session (0: all connected), from the replica writing Cluster status; other replicas export 0: use max().
# TYPE backhaul_hub_cluster_longest_disconnected_seconds gauge
backhaul_hub_cluster_longest_disconnected_seconds 0
`, "backhaul_hub_cluster_longest_disconnected_seconds")
	assert.Equal(t, 4, promtest.CollectAndCount(m, "backhaul_hub_clusters"), "every state, at 0")
}

func TestFleetMetricsPerClusterCeiling(t *testing.T) {
	m, reg, _ := newTestMetrics(t, MetricsConfig{PerCluster: true, PerClusterLimit: 2})
	m.lead(true)
	for _, n := range []string{"c", "a", "b"} {
		m.set(n, clusterHealth{connected: true, rtt: 5 * time.Millisecond, streams: 3, reconnects: 1})
	}
	const help = `
# HELP backhaul_hub_cluster_series_omitted Clusters left without per-cluster series because --metrics-per-cluster-limit was reached.
# TYPE backhaul_hub_cluster_series_omitted gauge
`
	series(t, reg, help+"backhaul_hub_cluster_series_omitted 1\n", "backhaul_hub_cluster_series_omitted")
	series(t, reg, `
# HELP backhaul_hub_cluster_streams Streams open through the cluster's sessions (--metrics-per-cluster).
# TYPE backhaul_hub_cluster_streams gauge
backhaul_hub_cluster_streams{cluster="a"} 3
backhaul_hub_cluster_streams{cluster="c"} 3
`, "backhaul_hub_cluster_streams")
	for _, name := range []string{"backhaul_hub_cluster_rtt_seconds", "backhaul_hub_cluster_connected", "backhaul_hub_cluster_reconnects"} {
		assert.Equal(t, 2, promtest.CollectAndCount(m, name), "%s: the first two clusters heard of, up to the ceiling", name)
	}

	// c is removed: its series go, and b takes its slot.
	m.retain([]string{"a", "b"})
	series(t, reg, help+"backhaul_hub_cluster_series_omitted 0\n", "backhaul_hub_cluster_series_omitted")
	series(t, reg, `
# HELP backhaul_hub_cluster_connected 1 while an agent of the cluster holds a session to any replica (--metrics-per-cluster).
# TYPE backhaul_hub_cluster_connected gauge
backhaul_hub_cluster_connected{cluster="a"} 1
backhaul_hub_cluster_connected{cluster="b"} 1
`, "backhaul_hub_cluster_connected")
}

func TestMetricsConfigValidate(t *testing.T) {
	assert.NoError(t, DefaultMetricsConfig().Validate())
	assert.Error(t, MetricsConfig{PerCluster: true}.Validate())
	assert.NoError(t, DefaultTunnelHealthConfig().Validate())
	assert.Error(t, TunnelHealthConfig{Window: time.Second, WriteInterval: time.Minute}.Validate())
}
