package session

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/tunnel"
)

// Registry holds the live sessions of every cluster on this hub, and the
// node routes their agents advertised. A cluster may have several
// sessions (agent replicas, or an agent that reconnected before the hub
// noticed its old session die); the newest serves new streams. Node
// routes belong to their cluster: edge sites reuse private ranges, so the
// same address may be a node of several clusters, and one cluster's agent
// never takes over another's address.
type Registry struct {
	log     hclog.Logger
	metrics *Metrics

	mu       sync.RWMutex
	sessions map[string][]*Session
	// nodes sends a node address of a cluster to the sessions of that
	// cluster whose agents advertised it (address, then cluster); within a
	// cluster the newest claim wins, and a route goes with its session.
	nodes  map[netip.Addr]map[string][]*Session
	nextID uint64
	// closed is set by CloseAll: a hub that is stopping takes no sessions.
	closed bool
	// draining is set by DrainAll: new streams go to peers where they can.
	draining atomic.Bool
	// watchers run, outside the lock, whenever a cluster gains or loses a
	// session.
	watchers []func(cluster string)
	// observers hear, outside the lock, of each session added and removed
	// (the tunnel health tracker).
	observers []sessionObserver
	// now is the clock sessions are stamped with (tests set it).
	now func() time.Time
}

// sessionObserver hears of each session the registry adds, and of each
// it removes with why it ended (a Disconnect constant).
type sessionObserver interface {
	sessionOpened(s *Session)
	sessionClosed(s *Session, reason string)
}

// NewRegistry returns an empty registry.
func NewRegistry(log hclog.Logger, m *Metrics) *Registry {
	return &Registry{log: log, metrics: m, sessions: map[string][]*Session{}, nodes: map[netip.Addr]map[string][]*Session{}, now: time.Now}
}

// observe adds o to the observers of sessions.
func (r *Registry) observe(o sessionObserver) {
	r.mu.Lock()
	r.observers = append(r.observers, o)
	r.mu.Unlock()
}

func (r *Registry) observersNow() []sessionObserver {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.observers
}

// Watch calls fn, outside the registry's lock, each time a cluster gains
// or loses a session. fn must not block; controllers enqueue the name.
func (r *Registry) Watch(fn func(cluster string)) {
	r.mu.Lock()
	r.watchers = append(r.watchers, fn)
	r.mu.Unlock()
}

func (r *Registry) notify(cluster string) {
	r.mu.RLock()
	ws := r.watchers
	r.mu.RUnlock()
	for _, fn := range ws {
		fn(cluster)
	}
}

// Add registers ts, an agent's tunnel for cluster, and returns its Session
// and the function that removes it. After CloseAll it refuses with
// ErrShutdown, so a session that connects while the hub drains ends at once.
func (r *Registry) Add(cluster string, ts *tunnel.Session, a Agent) (*Session, func(), error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrShutdown
	}
	r.nextID++
	s := &Session{tunnel: ts, features: a.Features, agent: a, info: Info{
		Cluster: cluster, ID: r.nextID, AgentVersion: a.Version,
		Remote: ts.RemoteAddr().String(), Since: r.now(), Node: a.Node, Addresses: a.Addresses,
	}}
	r.sessions[cluster] = append(r.sessions[cluster], s)
	var shared []string
	for _, addr := range a.Addresses {
		byCluster := r.nodes[addr]
		if byCluster == nil {
			byCluster = map[string][]*Session{}
			r.nodes[addr] = byCluster
		}
		if len(byCluster[cluster]) == 0 && len(byCluster) > 0 {
			shared = append(shared, addr.String())
		}
		byCluster[cluster] = append(byCluster[cluster], s)
	}
	n := len(r.sessions[cluster])
	r.mu.Unlock()
	if len(shared) > 0 {
		// Legitimate where sites reuse ranges; also what an agent claiming
		// another site's node looks like. Either way the bare IP:PORT form
		// is now ambiguous for these addresses and is refused.
		r.log.Warn("node addresses advertised by more than one cluster: CONNECT must name the cluster for them", "cluster", cluster, "node", a.Node, "addresses", shared)
	}
	r.metrics.sessionUp()
	r.log.Info("agent connected", "cluster", cluster, "session", s.info.ID, "remote", s.info.Remote, "agent_version", a.Version, "sessions", n)
	for _, o := range r.observersNow() {
		o.sessionOpened(s)
	}
	r.notify(cluster)
	var once sync.Once
	return s, func() { once.Do(func() { r.remove(s) }) }, nil
}

func (r *Registry) remove(s *Session) {
	cluster := s.Cluster()
	r.mu.Lock()
	for _, a := range s.info.Addresses {
		byCluster := r.nodes[a]
		if rs := slices.DeleteFunc(byCluster[cluster], func(x *Session) bool { return x == s }); len(rs) > 0 {
			byCluster[cluster] = rs
		} else {
			delete(byCluster, cluster)
		}
		if len(byCluster) == 0 {
			delete(r.nodes, a)
		}
	}
	list := slices.DeleteFunc(r.sessions[cluster], func(x *Session) bool { return x == s })
	if len(list) == 0 {
		delete(r.sessions, cluster)
	} else {
		r.sessions[cluster] = list
	}
	reason := disconnectReason(s, list, r.now())
	r.mu.Unlock()
	s.closeIdle()
	r.metrics.sessionDown()
	r.metrics.disconnected(reason)
	r.log.Info("agent disconnected", "cluster", cluster, "session", s.info.ID, "reason", reason, "sessions", len(list))
	for _, o := range r.observersNow() {
		o.sessionClosed(s, reason)
	}
	r.notify(cluster)
}

// Get returns the session that should carry a new stream to cluster: the
// newest that is still alive.
func (r *Registry) Get(cluster string) (*Session, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s := newestAlive(r.sessions[cluster]); s != nil {
		return s, nil
	}
	return nil, &ClusterError{Cluster: cluster, Err: ErrNotConnected}
}

// Route returns the session of cluster whose agent advertised node
// address addr (the newest such). It fails with a *ClusterError wrapping
// ErrNoRoute: an agent of another cluster that advertised addr is never
// the answer.
func (r *Registry) Route(cluster string, addr netip.Addr) (*Session, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s := newestAlive(r.nodes[addr.Unmap()][cluster]); s != nil {
		return s, nil
	}
	return nil, &ClusterError{Cluster: cluster, Err: ErrNoRoute}
}

// NodeClusters lists, sorted, the clusters whose live sessions here
// advertised node address addr.
func (r *Registry) NodeClusters(addr netip.Addr) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for c, list := range r.nodes[addr.Unmap()] {
		if newestAlive(list) != nil {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// newestExcept is cluster's newest live session other than s.
func (r *Registry) newestExcept(cluster string, s *Session) *Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.sessions[cluster]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i] != s && list[i].serving() {
			return list[i]
		}
	}
	return nil
}

// newestAlive is the newest session of list that may carry new streams
// (alive, and not retired at the end of its life).
func newestAlive(list []*Session) *Session {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].serving() {
			return list[i]
		}
	}
	return nil
}

// Connected says whether cluster has at least one session.
func (r *Registry) Connected(cluster string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.sessions[cluster]) > 0
}

// Agents counts cluster's sessions and gives the newest one's agent
// version, without listing every session of every cluster.
func (r *Registry) Agents(cluster string) (n int, newestVersion string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.sessions[cluster]
	if len(list) > 0 {
		newestVersion = list[len(list)-1].info.AgentVersion
	}
	return len(list), newestVersion
}

// Sessions lists the registered sessions, by cluster then age.
func (r *Registry) Sessions() []*Session {
	r.mu.RLock()
	var out []*Session
	for _, list := range r.sessions {
		out = append(out, list...)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Session) int {
		return cmp.Or(cmp.Compare(a.info.Cluster, b.info.Cluster), cmp.Compare(a.info.ID, b.info.ID))
	})
	return out
}

// Close ends every session of cluster (revocation). It returns how many.
func (r *Registry) Close(cluster string) int {
	r.mu.RLock()
	ss := slices.Clone(r.sessions[cluster])
	r.mu.RUnlock()
	for _, s := range ss {
		s.markEnd(DisconnectRevoked)
		_ = s.tunnel.Close()
	}
	return len(ss)
}

// CloseAll ends every session and refuses new ones (hub shutdown).
func (r *Registry) CloseAll() {
	r.mu.Lock()
	r.closed = true
	var all []*Session
	for _, list := range r.sessions {
		all = append(all, list...)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.markEnd(DisconnectShutdown)
		_ = s.tunnel.Close()
	}
}

// Holding is one cluster this replica holds sessions of, for the session
// directory.
type Holding struct {
	Cluster      string
	Sessions     int
	AgentVersion string // the newest session's
	Nodes        []netip.Addr
}

// Holdings lists the clusters this replica holds sessions of.
func (r *Registry) Holdings() []Holding {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Holding, 0, len(r.sessions))
	for c, list := range r.sessions {
		h := Holding{Cluster: c, Sessions: len(list), AgentVersion: list[len(list)-1].info.AgentVersion}
		for _, s := range list {
			h.Nodes = append(h.Nodes, s.info.Addresses...)
		}
		out = append(out, h)
	}
	return out
}

// DrainAll tells every agent connected here to move to another replica
// within grace (tunnel.KindDrain), a few at a time. Agents too old to
// know the message answer it with an error, which is only logged: their
// sessions end when the hub closes them.
func (r *Registry) DrainAll(ctx context.Context, grace time.Duration) {
	r.draining.Store(true)
	r.mu.RLock()
	var all []*Session
	for _, list := range r.sessions {
		all = append(all, list...)
	}
	r.mu.RUnlock()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, s := range all {
		sem <- struct{}{}
		s.markEnd(DisconnectDrained)
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.tunnel.Drain(ctx, grace); err != nil {
				r.log.Debug("agent did not take the drain message", "cluster", s.Cluster(), "session", s.info.ID, "error", err)
			}
			// Idle pooled streams would keep the agent waiting for them.
			s.closeIdle()
		})
	}
	wg.Wait()
}

// Len is how many sessions are registered.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, list := range r.sessions {
		n += len(list)
	}
	return n
}
