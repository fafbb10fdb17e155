package session

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/tunnel"
)

// fakePeer is a peer replica that is never dialled here.
type fakePeer struct{ name string }

func (p fakePeer) Name() string { return p.name }
func (fakePeer) Open(context.Context, string, tunnel.Request) (net.Conn, error) {
	return nil, &tunnel.DialError{Code: tunnel.CodeUnavailable}
}
func (p fakePeer) OpenEarly(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error) {
	return p.Open(ctx, cluster, req)
}
func (fakePeer) Done() <-chan struct{} { return nil }

// nodePeers is a directory of which peer's agents of which cluster
// advertised which node address.
type nodePeers map[netip.Addr]map[string][]Peer

func (nodePeers) Holders(string) []Peer { return nil }
func (n nodePeers) NodeHolders(cluster string, addr netip.Addr) []Peer {
	return n[addr][cluster]
}
func (n nodePeers) NodeClusters(addr netip.Addr) []string {
	var out []string
	for c := range n[addr] {
		out = append(out, c)
	}
	return out
}
func (nodePeers) Replicas() int { return 2 }

// A node route is looked up within its cluster, here and on peers; the
// clusters that advertise an address are counted across replicas, so a
// bare address is ambiguous whichever replica a caller reaches.
func TestDialerNodeRoutes(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	ip := netip.MustParseAddr("10.0.0.5")
	local, _ := add(t, r, "site-a", pipeSession(t), Agent{Addresses: []netip.Addr{ip}})
	hubB := fakePeer{"hub-b"}
	peers := nodePeers{ip: {"site-b": {hubB}, "site-a": {hubB}}}
	d := NewDialer(r, peers, m, hubtest.WaitBound)

	cases := []struct {
		name      string
		cluster   string
		wantLocal *Session
		wantVia   []string
	}{
		{"this replica's own agent first", "site-a", local, []string{}},
		{"another site's agent, on a peer", "site-b", nil, []string{"hub-b"}},
		{"a cluster nobody holds the address of", "site-c", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			route, err := d.NodeRoute(tc.cluster, ip)
			if tc.wantVia == nil {
				require.ErrorIs(t, err, ErrNoRoute)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.cluster, route.Cluster())
			assert.Same(t, tc.wantLocal, route.Local())
			assert.Equal(t, tc.wantVia, route.Via())
		})
	}
	assert.Equal(t, []string{"site-a", "site-b"}, d.NodeClusters(ip), "sorted, each cluster once")
	assert.Equal(t, []string{"site-a"}, NewDialer(r, nil, m, hubtest.WaitBound).NodeClusters(netip.MustParseAddr("::ffff:10.0.0.5")))
}
