package hub

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func TestTunnelHealthFlags(t *testing.T) {
	o := NewOptions()
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	o.Flags(fs)
	assert.Equal(t, DefaultTunnelHealthConfig(), o.TunnelHealth.config(), "the flags' defaults are the config's")
	require.NoError(t, fs.Parse([]string{
		"--tunnel-health-window=5m", "--tunnel-health-write-interval=30s", "--tunnel-flapping-reconnects=0",
		"--metrics-per-cluster", "--metrics-per-cluster-limit=50",
	}))
	assert.Equal(t, TunnelHealthConfig{
		Status:  fleet.TunnelHealthConfig{Window: 5 * time.Minute, WriteInterval: 30 * time.Second, FlappingReconnects: 0},
		Metrics: fleet.MetricsConfig{PerCluster: true, PerClusterLimit: 50},
	}, o.TunnelHealth.config())

	bad := DefaultTunnelHealthConfig()
	bad.Status.Window, bad.Metrics.PerClusterLimit = time.Second, 0
	assert.ErrorContains(t, bad.Validate(), "window")
	assert.ErrorContains(t, bad.Validate(), "limit")
}

func TestReplicaTunnelIsCompact(t *testing.T) {
	since := time.Unix(1_900_000_000, 0)
	r := session.TunnelReport{
		Cluster: "edge", RTT: 1500 * time.Microsecond, RTTP99: 4 * time.Millisecond,
		Opens: []time.Time{since.Add(250 * time.Millisecond)}, Since: since, Newest: since,
		CertNotAfter: since.Add(time.Hour), ClockSkew: -1500 * time.Millisecond, HasClockSkew: true,
	}
	skew := int64(-1500)
	assert.Equal(t, v1alpha1.ReplicaTunnel{
		Name: "edge", RTTMicros: 1500, RTTP99Micros: 4000, Opens: []int64{1_900_000_000_250},
		Since: 1_900_000_000, CertNotAfter: 1_900_003_600, SkewMillis: &skew,
	}, replicaTunnel(r), "the newest session's start is left out when it is the oldest's; no skew is not zero skew")
	r.Newest, r.HasClockSkew = since.Add(time.Minute), false
	got := replicaTunnel(r)
	assert.EqualValues(t, 1_900_000_060, got.Newest)
	assert.Nil(t, got.SkewMillis)
}
