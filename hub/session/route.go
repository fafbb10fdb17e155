package session

import (
	"context"
	"net"

	"backhaul.io/backhaul/tunnel"
)

// Peer is another hub replica, reached over the one peer connection this
// replica keeps with it (package peer implements it).
type Peer interface {
	// Name is the replica's name.
	Name() string
	// Open opens, through the peer's own agent session of cluster, a
	// stream for req. The peer answers a *tunnel.DialError as an agent
	// would; CodeUnavailable means it no longer holds a session of cluster.
	Open(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error)
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
	// NodeHolder names the cluster whose agent advertised node address
	// addr on a peer, and the peers that hold it.
	NodeHolder(addr string) (cluster string, peers []Peer)
	// Replicas is how many replicas serve, this one included.
	Replicas() int
}

// NoPeers is a hub that is the only replica.
type NoPeers struct{}

func (NoPeers) Holders(string) []Peer              { return nil }
func (NoPeers) NodeHolder(string) (string, []Peer) { return "", nil }
func (NoPeers) Replicas() int                      { return 1 }

var _ Peers = NoPeers{}

// Route is how this replica reaches a cluster right now: through one of
// its own agent sessions, or through peers that hold one. Admission finds
// it once per request; the dialer carries the request along it.
type Route struct {
	cluster string
	local   *Session
	peers   []Peer
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
