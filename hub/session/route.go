package session

import (
	"context"
	"net"
	"net/netip"
	"slices"

	"backhaul.io/backhaul/tunnel"
)

// ReasonAmbiguousNode is the backhaul_hub_errors_total reason of a CONNECT
// to a bare node address that agents of more than one cluster advertise;
// it belongs to the closed set of Reason constants in metrics.go.
const ReasonAmbiguousNode = "ambiguous_node_address"

// Peer is another hub replica, reached over the one peer connection this
// replica keeps with it (package peer implements it).
type Peer interface {
	// Name is the replica's name.
	Name() string
	// Open opens, through the peer's own agent session of cluster, a
	// stream for req. The peer answers a *tunnel.DialError as an agent
	// would; CodeUnavailable means it no longer holds a session of cluster.
	Open(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error)
	// OpenEarly is Open without waiting for the answer
	// (tunnel.Session.OpenEarly): it comes with the stream's first Read.
	OpenEarly(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error)
	// Done is closed when this connection to the peer ends, and with it
	// every stream opened on it.
	Done() <-chan struct{}
}

// Peers says which other replicas hold a session of a cluster, from the
// session directory.
type Peers interface {
	// Holders lists the connected peers that hold a session of cluster,
	// best first (replicas that are not draining before those that are).
	Holders(cluster string) []Peer
	// NodeHolders lists the connected peers holding a session of cluster
	// whose agent advertised node address addr, best first.
	NodeHolders(cluster string, addr netip.Addr) []Peer
	// NodeClusters lists, sorted, the clusters whose agents on connected
	// peers advertised node address addr.
	NodeClusters(addr netip.Addr) []string
	// Replicas is how many replicas serve, this one included.
	Replicas() int
}

// NoPeers is a hub that is the only replica.
type NoPeers struct{}

func (NoPeers) Holders(string) []Peer                 { return nil }
func (NoPeers) NodeHolders(string, netip.Addr) []Peer { return nil }
func (NoPeers) NodeClusters(netip.Addr) []string      { return nil }
func (NoPeers) Replicas() int                         { return 1 }

var _ Peers = NoPeers{}

// Route is how this replica reaches a cluster right now: through one of
// its own agent sessions, or through peers that hold one. Admission finds
// it once per request; the dialer carries the request along it.
type Route struct {
	cluster string
	local   *Session
	peers   []Peer
	// fallback is this replica's own session, when it drains and sends new
	// streams to peers instead: used if no peer serves after all.
	fallback *Session
}

// Cluster is the cluster the route reaches.
func (r *Route) Cluster() string { return r.cluster }

// Local is this replica's session the route uses, nil when it forwards.
func (r *Route) Local() *Session { return r.local }

// Via names the replicas a forwarded route may go through, best first.
func (r *Route) Via() []string {
	names := make([]string, len(r.peers))
	for i, p := range r.peers {
		names[i] = p.Name()
	}
	return names
}

// NodeRoute finds how to reach node address addr of cluster: this
// replica's session of cluster whose agent advertised addr, else the peers
// holding one. Only cluster's agents are considered, so an agent of
// another site that advertises the same address (sites reuse private
// ranges, or it lies) is never used. It fails with a *ClusterError
// wrapping ErrNoRoute.
func (d *Dialer) NodeRoute(cluster string, addr netip.Addr) (*Route, error) {
	addr = addr.Unmap()
	if s, err := d.registry.Route(cluster, addr); err == nil {
		return &Route{cluster: cluster, local: s}, nil
	}
	if peers := d.peers.NodeHolders(cluster, addr); len(peers) > 0 {
		return &Route{cluster: cluster, peers: peers}, nil
	}
	return nil, &ClusterError{Cluster: cluster, Err: ErrNoRoute}
}

// NodeClusters lists, sorted, the clusters whose agents, here or on a
// peer, advertised node address addr: a CONNECT to a bare IP:PORT is
// routed only when there is exactly one.
func (d *Dialer) NodeClusters(addr netip.Addr) []string {
	addr = addr.Unmap()
	out := append(d.registry.NodeClusters(addr), d.peers.NodeClusters(addr)...)
	slices.Sort(out)
	return slices.Compact(out)
}
