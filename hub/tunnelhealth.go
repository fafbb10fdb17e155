package hub

import (
	"errors"
	"flag"
	"time"

	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// TunnelHealthOptions are the flags of per-cluster tunnel health.
type TunnelHealthOptions struct {
	Window                 time.Duration
	WriteInterval          time.Duration
	FlappingReconnects     int
	MetricsPerCluster      bool
	MetricsPerClusterLimit int
}

func defaultTunnelHealthOptions() TunnelHealthOptions {
	st, m := fleet.DefaultTunnelHealthConfig(), fleet.DefaultMetricsConfig()
	return TunnelHealthOptions{
		Window: st.Window, WriteInterval: st.WriteInterval, FlappingReconnects: st.FlappingReconnects,
		MetricsPerCluster: m.PerCluster, MetricsPerClusterLimit: m.PerClusterLimit,
	}
}

func (o *TunnelHealthOptions) flags(fs *flag.FlagSet) {
	fs.DurationVar(&o.Window, "tunnel-health-window", o.Window, "window of a cluster's tunnel round-trip p99 and reconnects (Cluster status.tunnel)")
	fs.DurationVar(&o.WriteInterval, "tunnel-health-write-interval", o.WriteInterval, "how often at most a cluster's tunnel round trip, streams, bytes and clock skew are written to its status; connects, disconnects, refusals and flapping are written at once")
	fs.IntVar(&o.FlappingReconnects, "tunnel-flapping-reconnects", o.FlappingReconnects, "reconnects within --tunnel-health-window from which a cluster is flapping (0: never)")
	fs.BoolVar(&o.MetricsPerCluster, "metrics-per-cluster", o.MetricsPerCluster, "export per-cluster series (backhaul_hub_cluster_{rtt_seconds,connected,reconnects,streams}{cluster}) from the replica writing Cluster status: four series per cluster")
	fs.IntVar(&o.MetricsPerClusterLimit, "metrics-per-cluster-limit", o.MetricsPerClusterLimit, "most clusters given per-cluster series; those beyond are counted in backhaul_hub_cluster_series_omitted")
}

func (o TunnelHealthOptions) config() TunnelHealthConfig {
	return TunnelHealthConfig{
		Status:  fleet.TunnelHealthConfig{Window: o.Window, FlappingReconnects: o.FlappingReconnects, WriteInterval: o.WriteInterval},
		Metrics: fleet.MetricsConfig{PerCluster: o.MetricsPerCluster, PerClusterLimit: o.MetricsPerClusterLimit},
	}
}

// TunnelHealthConfig is how the hub measures each cluster's tunnel in the
// background and reports it: in Cluster status.tunnel (with a host
// cluster) and in the fleet's series.
type TunnelHealthConfig struct {
	Status  fleet.TunnelHealthConfig
	Metrics fleet.MetricsConfig
}

// DefaultTunnelHealthConfig is a 10-minute window, round trips written at
// most once a minute, no per-cluster series.
func DefaultTunnelHealthConfig() TunnelHealthConfig {
	return TunnelHealthConfig{Status: fleet.DefaultTunnelHealthConfig(), Metrics: fleet.DefaultMetricsConfig()}
}

// Validate checks the settings.
func (c TunnelHealthConfig) Validate() error {
	return errors.Join(c.Status.Validate(), c.Metrics.Validate())
}

// newTracker sets up the tunnel health tracker (and, with a host
// cluster, the fleet's series, which the status writer feeds).
func (s *Server) newTracker(m *session.Metrics) error {
	if s.cfg.TunnelHealth == (TunnelHealthConfig{}) {
		s.cfg.TunnelHealth = DefaultTunnelHealthConfig()
	}
	if err := s.cfg.TunnelHealth.Validate(); err != nil {
		return err
	}
	tc := session.DefaultTrackerConfig()
	tc.Window = s.cfg.TunnelHealth.Status.Window
	// A refusal is news for the directory at once, as a disconnect is.
	tc.OnChange = s.holdingsChanged
	var err error
	if s.tracker, err = session.NewTracker(s.sessions, m, tc); err != nil {
		return err
	}
	if s.cfg.Host != nil {
		s.fleetMetrics, err = fleet.NewMetrics(s.cfg.Metrics, s.cfg.TunnelHealth.Metrics)
	}
	return err
}

// tunnels is what this replica publishes in the directory of its
// clusters' tunnels.
func (s *Server) tunnels() []v1alpha1.ReplicaTunnel {
	reports := s.tracker.Report()
	out := make([]v1alpha1.ReplicaTunnel, 0, len(reports))
	for _, r := range reports {
		out = append(out, replicaTunnel(r))
	}
	return out
}

func replicaTunnel(r session.TunnelReport) v1alpha1.ReplicaTunnel {
	t := v1alpha1.ReplicaTunnel{
		Name: r.Cluster, RTTMicros: r.RTT.Microseconds(), RTTP99Micros: r.RTTP99.Microseconds(),
		Opens: unixMillis(r.Opens), Losses: unixMillis(r.Losses), Streams: int32(r.Streams), BytesTx: r.BytesTx, BytesRx: r.BytesRx,
		Since: unix(r.Since), CertNotAfter: unix(r.CertNotAfter),
		Disconnect: unix(r.Disconnect), DisconnectReason: r.DisconnectReason,
		Refusal: unix(r.Refusal), RefusalReason: r.RefusalReason,
	}
	if !r.Newest.Equal(r.Since) {
		t.Newest = unix(r.Newest)
	}
	if r.HasClockSkew {
		ms := r.ClockSkew.Milliseconds()
		t.SkewMillis = &ms
	}
	return t
}

func unixMillis(ts []time.Time) []int64 {
	if len(ts) == 0 {
		return nil
	}
	out := make([]int64, len(ts))
	for i, t := range ts {
		out[i] = t.UnixMilli()
	}
	return out
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
