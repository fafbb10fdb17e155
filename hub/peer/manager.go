package peer

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
)

// Member is one replica as the session directory describes it.
type Member struct {
	Name string
	// Address is host:port of its peer listener.
	Address  string
	Draining bool
	// Clusters it holds sessions of, and the node addresses their agents
	// advertised (cluster → addresses): sites reuse private ranges, so an
	// address means something only within its cluster.
	Clusters []string
	Nodes    map[string][]string
}

// Config is what the Manager needs.
type Config struct {
	// Self names this replica.
	Self string
	// Identity is this replica's certificate and the hub CA that issued
	// every replica's (Identity.Run renews it).
	Identity *Identity
	// Sessions is this replica's registry: forwarded streams go to its
	// sessions, never further.
	Sessions *session.Registry
	Tunnel   *tunnel.Config
	// Backoff paces reconnects to a peer.
	Backoff func() *tunnel.Backoff
	// OnChange is called, never concurrently and without blocking, for each
	// cluster that peers start or stop holding.
	OnChange func(cluster string)
	Log      hclog.Logger
}

// Manager keeps this replica's connections to its peers and knows which
// of them hold which clusters.
type Manager struct {
	cfg Config

	mu      sync.RWMutex
	members map[string]Member
	conns   map[string]*conn
	holders map[string][]string // cluster → peer names, best first
	// nodes: node address → cluster → the peers whose agents of that
	// cluster advertised it.
	nodes map[netip.Addr]map[string][]string

	replicas atomic.Int32
	wake     chan struct{} // the desired connections changed
	notifyMu sync.Mutex
}

var _ session.Peers = (*Manager)(nil)

// NewManager returns a manager with no peers yet.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Self == "" || cfg.Identity == nil || cfg.Sessions == nil || cfg.Tunnel == nil || cfg.Log == nil {
		return nil, errors.New("peer: Self, Identity, Sessions, Tunnel and Log are required")
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func() *tunnel.Backoff {
			return &tunnel.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second, ResetAfter: time.Minute}
		}
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(string) {}
	}
	m := &Manager{cfg: cfg, members: map[string]Member{}, conns: map[string]*conn{}, holders: map[string][]string{}, nodes: map[netip.Addr]map[string][]string{}, wake: make(chan struct{}, 1)}
	m.replicas.Store(1)
	return m, nil
}

// Update takes the directory's live replicas (this one included).
func (m *Manager) Update(members []Member) {
	next := make(map[string]Member, len(members))
	for _, mb := range members {
		if mb.Name != m.cfg.Self {
			next[mb.Name] = mb
		}
	}
	m.mu.Lock()
	before := m.holders
	m.members = next
	m.rebuild()
	after := m.holders
	m.mu.Unlock()
	m.replicas.Store(int32(len(next) + 1))
	select {
	case m.wake <- struct{}{}:
	default:
	}
	m.notify(before, after)
}

// rebuild recomputes who holds what from members and live connections.
// Callers hold mu.
func (m *Manager) rebuild() {
	holders := map[string][]string{}
	nodes := map[netip.Addr]map[string][]string{}
	for name, mb := range m.members {
		if m.conns[name] == nil {
			continue
		}
		for _, c := range mb.Clusters {
			holders[c] = append(holders[c], name)
		}
		for c, addrs := range mb.Nodes {
			for _, a := range addrs {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue // a peer's entry we cannot read routes nothing
				}
				ip = ip.Unmap()
				if nodes[ip] == nil {
					nodes[ip] = map[string][]string{}
				}
				if !slices.Contains(nodes[ip][c], name) {
					nodes[ip][c] = append(nodes[ip][c], name)
				}
			}
		}
	}
	for _, byCluster := range nodes {
		for _, names := range byCluster {
			m.sortPeers(names)
		}
	}
	for _, names := range holders {
		m.sortPeers(names)
	}
	m.holders, m.nodes = holders, nodes
}

// sortPeers puts replicas that are not draining first, then sorts by name
// so every replica picks the same one and pools stay warm. Callers hold mu.
func (m *Manager) sortPeers(names []string) {
	slices.SortFunc(names, func(a, b string) int {
		da, db := m.members[a].Draining, m.members[b].Draining
		if da != db {
			if da {
				return 1
			}
			return -1
		}
		return cmp.Compare(a, b)
	})
}

// notify reports clusters whose holders appeared or disappeared.
func (m *Manager) notify(before, after map[string][]string) {
	m.notifyMu.Lock()
	defer m.notifyMu.Unlock()
	for c := range before {
		if len(after[c]) == 0 {
			m.cfg.OnChange(c)
		}
	}
	for c := range after {
		if len(before[c]) == 0 {
			m.cfg.OnChange(c)
		}
	}
}

// Holders implements session.Peers.
func (m *Manager) Holders(cluster string) []session.Peer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.connected(m.holders[cluster])
}

// NodeHolders implements session.Peers.
func (m *Manager) NodeHolders(cluster string, addr netip.Addr) []session.Peer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.connected(m.nodes[addr.Unmap()][cluster])
}

// NodeClusters implements session.Peers.
func (m *Manager) NodeClusters(addr netip.Addr) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	byCluster := m.nodes[addr.Unmap()]
	out := make([]string, 0, len(byCluster))
	for c, names := range byCluster {
		if len(m.connected(names)) > 0 {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// connected is the live connections of the named peers, in order.
// Callers hold mu.
func (m *Manager) connected(names []string) []session.Peer {
	out := make([]session.Peer, 0, len(names))
	for _, n := range names {
		if c := m.conns[n]; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Replicas implements session.Peers.
func (m *Manager) Replicas() int { return int(m.replicas.Load()) }

// Connected lists the peers this replica has a connection with.
func (m *Manager) Connected() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.conns))
	for n := range m.conns {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// attach records c as the connection with its peer, replacing an older
// one, and returns the function that detaches it.
func (m *Manager) attach(c *conn) func() {
	m.mu.Lock()
	old := m.conns[c.name]
	m.conns[c.name] = c
	before := m.holders
	m.rebuild()
	after := m.holders
	m.mu.Unlock()
	if old != nil {
		_ = old.sess.Close()
	}
	m.notify(before, after)
	m.cfg.Log.Info("peer connected", "peer", c.name, "remote", c.sess.RemoteAddr().String())
	return func() {
		m.mu.Lock()
		if m.conns[c.name] != c {
			m.mu.Unlock()
			return
		}
		delete(m.conns, c.name)
		before := m.holders
		m.rebuild()
		after := m.holders
		m.mu.Unlock()
		m.notify(before, after)
		m.cfg.Log.Info("peer disconnected", "peer", c.name)
	}
}

// conn is the connection with one peer.
type conn struct {
	name string
	sess *tunnel.Session
}

var _ session.Peer = (*conn)(nil)

func (c *conn) Name() string          { return c.name }
func (c *conn) Done() <-chan struct{} { return c.sess.Done() }

// Open implements session.Peer.
func (c *conn) Open(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error) {
	fr, err := tunnel.Forward(cluster, req)
	if err != nil {
		return nil, err
	}
	return c.sess.Open(ctx, fr)
}

// OpenEarly implements session.Peer.
func (c *conn) OpenEarly(ctx context.Context, cluster string, req tunnel.Request) (net.Conn, error) {
	fr, err := tunnel.Forward(cluster, req)
	if err != nil {
		return nil, err
	}
	return c.sess.OpenEarly(ctx, fr)
}

// CloseAll ends every peer connection (shutdown).
func (m *Manager) CloseAll() {
	m.mu.RLock()
	conns := make([]*conn, 0, len(m.conns))
	for _, c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.RUnlock()
	for _, c := range conns {
		_ = c.sess.Close()
	}
}
