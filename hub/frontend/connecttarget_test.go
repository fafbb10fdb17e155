package frontend

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTarget(t *testing.T) {
	const suffix = DefaultClusterSuffix
	cases := []struct {
		name, host  string
		wantCluster string
		wantAddr    string // "" for an API server target
		wantErr     bool
	}{
		{"cluster API server", "edge-1.cluster.backhaul", "edge-1", "", false},
		{"names are case-insensitive", "EDGE-1.Cluster.Backhaul", "edge-1", "", false},
		{"a cluster named like an address is a cluster", "10-0-0-5.cluster.backhaul", "10-0-0-5", "", false},
		{"a cluster named node is a cluster", "node.cluster.backhaul", "node", "", false},
		{"IPv4 node of a cluster", "10-0-0-5.node.edge-1.cluster.backhaul", "edge-1", "10.0.0.5", false},
		{"IPv6 node of a cluster", "fd00--5.node.edge-1.cluster.backhaul", "edge-1", "fd00::5", false},
		{"IPv6 in capitals", "FD00--A.node.edge-1.cluster.backhaul", "edge-1", "fd00::a", false},
		{"full IPv6", "fd00-1-2-3-4-5-6-7.node.e.cluster.backhaul", "e", "fd00:1:2:3:4:5:6:7", false},
		{"IPv4-mapped IPv6 is its IPv4 address", "--ffff-a00-5.node.e.cluster.backhaul", "e", "10.0.0.5", false},
		{"a node of a cluster named node", "10-0-0-5.node.node.cluster.backhaul", "node", "10.0.0.5", false},
		{"bare IPv4", "10.0.0.5", "", "10.0.0.5", false},
		{"bare IPv6", "fd00::5", "", "fd00::5", false},
		{"bare IPv4-mapped", "::ffff:10.0.0.5", "", "10.0.0.5", false},
		{"bare IPv6 with a zone", "fe80::1%eth0", "", "", true},
		{"no suffix", "example.com", "", "", true},
		{"the suffix alone", "cluster.backhaul", "", "", true},
		{"empty cluster", ".cluster.backhaul", "", "", true},
		{"two labels", "a.b.cluster.backhaul", "", "", true},
		{"node form without node", "10-0-0-5.nodes.edge-1.cluster.backhaul", "", "", true},
		{"four labels", "x.10-0-0-5.node.edge-1.cluster.backhaul", "", "", true},
		{"not an address label", "ten.node.edge-1.cluster.backhaul", "", "", true},
		{"IPv4 with too few parts", "10-0-5.node.edge-1.cluster.backhaul", "", "", true},
		{"IPv4 with leading zeros", "010-0-0-5.node.edge-1.cluster.backhaul", "", "", true},
		{"bad cluster label", "10-0-0-5.node.Edge_1.cluster.backhaul", "", "", true},
		{"bad cluster name", "-edge.cluster.backhaul", "", "", true},
		{"empty address label", ".node.edge-1.cluster.backhaul", "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTarget(tc.host, suffix)
			if tc.wantErr {
				require.ErrorIs(t, err, errNotATarget)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantCluster, got.cluster)
			if tc.wantAddr == "" {
				assert.False(t, got.node())
				return
			}
			assert.Equal(t, netip.MustParseAddr(tc.wantAddr), got.addr)
		})
	}
}

func TestNodeHostRoundTrips(t *testing.T) {
	for _, a := range []string{"10.0.0.5", "fd00::5", "2001:db8::1:0:0:1", "fd00:1:2:3:4:5:6:7"} {
		addr := netip.MustParseAddr(a)
		host := nodeHost(addr, "edge-1", DefaultClusterSuffix)
		got, err := parseTarget(host, DefaultClusterSuffix)
		require.NoError(t, err, host)
		assert.Equal(t, connectTarget{cluster: "edge-1", addr: addr}, got, host)
	}
	assert.Equal(t, "10-0-0-5.node.edge-1.cluster.backhaul", nodeHost(netip.MustParseAddr("10.0.0.5"), "edge-1", DefaultClusterSuffix))
	assert.Equal(t, "fd00--5.node.edge-1.cluster.backhaul", nodeHost(netip.MustParseAddr("fd00::5"), "edge-1", DefaultClusterSuffix))
}
