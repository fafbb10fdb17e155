package session

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

func newTestRegistry(t *testing.T) (*Registry, *Metrics, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	return NewRegistry(testutil.Logger(t), m), m, reg
}

func pipeSession(t *testing.T) *tunnel.Session {
	s, _ := hubtest.PipeSessions(t)
	return s
}

func add(t *testing.T, r *Registry, cluster string, ts *tunnel.Session, a Agent) (*Session, func()) {
	t.Helper()
	s, remove, err := r.Add(cluster, ts, a)
	require.NoError(t, err)
	return s, remove
}

func TestRegistryRoutes(t *testing.T) {
	r, _, _ := newTestRegistry(t)
	a1, a2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")

	s1, rm1 := add(t, r, "edge", pipeSession(t), Agent{Version: "v", Node: "node-1", Addresses: []netip.Addr{a1}})
	s2, rm2 := add(t, r, "edge", pipeSession(t), Agent{Version: "v", Node: "node-2", Addresses: []netip.Addr{a2}})
	s, err := r.Route("edge", a1)
	require.NoError(t, err)
	assert.Equal(t, "edge", s.Cluster())
	assert.Same(t, s1, s, "each node address goes to the agent that advertised it")
	s, err = r.Route("edge", a2)
	require.NoError(t, err)
	assert.Same(t, s2, s)

	// A newer claim wins; when it ends, the older one is used again.
	s3, rm3 := add(t, r, "edge", pipeSession(t), Agent{Version: "v", Node: "node-1b", Addresses: []netip.Addr{a1}})
	s, _ = r.Route("edge", a1)
	assert.Same(t, s3, s)
	rm3()
	s, _ = r.Route("edge", a1)
	assert.Same(t, s1, s)

	// Routes vanish with their session.
	rm1()
	_, err = r.Route("edge", a1)
	assert.ErrorIs(t, err, ErrNoRoute)
	rm2()
	_, err = r.Route("edge", a2)
	assert.ErrorIs(t, err, ErrNoRoute)
	_, err = r.Get("edge")
	assert.ErrorIs(t, err, ErrNotConnected)
}

// Sites reuse private ranges: the same address is a node of two
// clusters, and each cluster's route goes to its own agent, however the
// claims were ordered. An agent of another site that advertises the
// address (the newest claim) never takes a cluster's route over.
func TestRegistryNodeRoutesArePerCluster(t *testing.T) {
	r, _, _ := newTestRegistry(t)
	ip := netip.MustParseAddr("10.0.0.5")
	siteA, rmA := add(t, r, "site-a", pipeSession(t), Agent{Node: "a-1", Addresses: []netip.Addr{ip}})
	assert.Equal(t, []string{"site-a"}, r.NodeClusters(ip))
	siteB, rmB := add(t, r, "site-b", pipeSession(t), Agent{Node: "b-1", Addresses: []netip.Addr{ip}})

	cases := []struct {
		name    string
		cluster string
		addr    netip.Addr
		want    *Session
	}{
		{"site a's own node", "site-a", ip, siteA},
		{"site b's own node", "site-b", ip, siteB},
		{"an IPv4-mapped form is the same node", "site-a", netip.MustParseAddr("::ffff:10.0.0.5"), siteA},
		{"a cluster that advertised nothing", "site-c", ip, nil},
		{"an address nobody advertised", "site-a", netip.MustParseAddr("10.0.0.6"), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := r.Route(tc.cluster, tc.addr)
			if tc.want == nil {
				require.ErrorIs(t, err, ErrNoRoute)
				var ce *ClusterError
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, tc.cluster, ce.Cluster)
				return
			}
			require.NoError(t, err)
			assert.Same(t, tc.want, s)
		})
	}
	assert.Equal(t, []string{"site-a", "site-b"}, r.NodeClusters(ip), "the bare address is ambiguous")

	// A dead session's claim does not count, before the hub notices.
	require.NoError(t, siteB.tunnel.Close())
	assert.Equal(t, []string{"site-a"}, r.NodeClusters(ip))
	rmB()
	rmA()
	assert.Empty(t, r.NodeClusters(ip))
	_, err := r.Route("site-a", ip)
	assert.ErrorIs(t, err, ErrNoRoute)
}

func TestRegistryNewestAliveServes(t *testing.T) {
	r, _, reg := newTestRegistry(t)
	old, _ := add(t, r, "edge", pipeSession(t), Agent{Version: "1"})
	newer, _ := add(t, r, "edge", pipeSession(t), Agent{Version: "2"})
	got, err := r.Get("edge")
	require.NoError(t, err)
	assert.Same(t, newer, got)
	n, v := r.Agents("edge")
	assert.Equal(t, 2, n)
	assert.Equal(t, "2", v)

	// A session that died before the hub noticed is passed over.
	require.NoError(t, newer.tunnel.Close())
	got, err = r.Get("edge")
	require.NoError(t, err)
	assert.Same(t, old, got)

	infos := r.Sessions()
	require.Len(t, infos, 2)
	assert.Equal(t, []uint64{1, 2}, []uint64{infos[0].Info().ID, infos[1].Info().ID})
	assert.Equal(t, 2.0, gauge(t, reg, "backhaul_hub_sessions"))
}

func TestRegistryCloseAllRefusesLateSessions(t *testing.T) {
	r, _, reg := newTestRegistry(t)
	var events []string
	r.Watch(func(c string) { events = append(events, c) })
	s, remove := add(t, r, "edge", pipeSession(t), Agent{})
	r.CloseAll()
	<-s.Done()
	remove()
	assert.False(t, r.Connected("edge"))
	assert.Equal(t, []string{"edge", "edge"}, events, "watchers hear of the session coming and going")

	// A session whose upgrade finished while the hub drained is refused.
	_, _, err := r.Add("edge", pipeSession(t), Agent{})
	require.ErrorIs(t, err, ErrShutdown)
	assert.Equal(t, 0.0, gauge(t, reg, "backhaul_hub_sessions"))
}

func TestRegistryCloseCluster(t *testing.T) {
	r, _, _ := newTestRegistry(t)
	a, _ := add(t, r, "edge", pipeSession(t), Agent{})
	b, _ := add(t, r, "edge", pipeSession(t), Agent{})
	other, _ := add(t, r, "other", pipeSession(t), Agent{})
	assert.Equal(t, 2, r.Close("edge"))
	<-a.Done()
	<-b.Done()
	assert.True(t, other.alive(), "revoking one cluster leaves the others")
	assert.Equal(t, 0, r.Close("nobody"))
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}
