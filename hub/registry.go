package hub

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/tunnel"
)

var (
	// ErrUnknownCluster: no credentials exist for this name.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrNotConnected: the cluster is known but no agent is connected.
	ErrNotConnected = errors.New("cluster is not connected")
)

// ClusterError names the cluster an error is about.
type ClusterError struct {
	Cluster string
	Err     error
}

func (e *ClusterError) Error() string { return fmt.Sprintf("cluster %s: %v", e.Cluster, e.Err) }
func (e *ClusterError) Unwrap() error { return e.Err }

// SessionInfo describes one connected agent session.
type SessionInfo struct {
	Cluster      string    `json:"cluster"`
	ID           uint64    `json:"id"`
	Remote       string    `json:"remote"`
	AgentVersion string    `json:"agentVersion"`
	Since        time.Time `json:"since"`
	Streams      int       `json:"streams"`
	// Node and Addresses are set for agents in node mode.
	Node      string       `json:"node,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
}

type entry struct {
	info SessionInfo
	sess *tunnel.Session
}

// Registry holds the live sessions of every cluster. A cluster may have
// several (agent replicas, or an agent that reconnected before the hub
// noticed its old session die); the newest serves new streams.
type Registry struct {
	mu       sync.RWMutex
	sessions map[string][]*entry
	// routes sends node addresses to the agents that advertised them; the
	// newest claim wins, and a route goes with its session.
	routes  map[netip.Addr][]*entry
	nextID  uint64
	log     hclog.Logger
	metrics *Metrics
	// onEmpty runs, outside the lock, when a cluster loses its last session.
	onEmpty func(cluster string)
	// watchers run, outside the lock, whenever a cluster gains or loses a
	// session.
	watchers []func(cluster string)
}

// Watch calls fn, outside the registry's lock, each time cluster gains or
// loses a session. fn must not block; controllers enqueue the name.
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

// Connected says whether cluster has at least one session.
func (r *Registry) Connected(cluster string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.sessions[cluster]) > 0
}

// Close ends every session of cluster (revocation). It returns how many.
func (r *Registry) Close(cluster string) int {
	r.mu.RLock()
	var ss []*tunnel.Session
	for _, e := range r.sessions[cluster] {
		ss = append(ss, e.sess)
	}
	r.mu.RUnlock()
	for _, s := range ss {
		_ = s.Close()
	}
	return len(ss)
}

// NewRegistry returns an empty registry.
func NewRegistry(log hclog.Logger, m *Metrics) *Registry {
	return &Registry{sessions: map[string][]*entry{}, routes: map[netip.Addr][]*entry{}, log: log, metrics: m}
}

// Add registers sess for cluster and returns the function that removes it.
// node and addrs are set for an agent in node mode.
func (r *Registry) Add(cluster string, sess *tunnel.Session, agentVersion, node string, addrs []netip.Addr) (remove func()) {
	r.mu.Lock()
	r.nextID++
	e := &entry{sess: sess, info: SessionInfo{
		Cluster: cluster, ID: r.nextID, AgentVersion: agentVersion,
		Remote: sess.RemoteAddr().String(), Since: time.Now(), Node: node, Addresses: addrs,
	}}
	r.sessions[cluster] = append(r.sessions[cluster], e)
	for _, a := range addrs {
		if prev := r.routes[a]; len(prev) > 0 && prev[len(prev)-1].info.Cluster != cluster {
			r.log.Warn("node address moves to another cluster", "address", a, "from", prev[len(prev)-1].info.Cluster, "to", cluster)
		}
		r.routes[a] = append(r.routes[a], e)
	}
	n := len(r.sessions[cluster])
	r.mu.Unlock()
	r.metrics.sessionUp()
	r.log.Info("agent connected", "cluster", cluster, "session", e.info.ID, "remote", e.info.Remote, "agent_version", agentVersion, "sessions", n)
	r.notify(cluster)

	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			for _, a := range addrs {
				if rs := slices.DeleteFunc(r.routes[a], func(x *entry) bool { return x == e }); len(rs) > 0 {
					r.routes[a] = rs
				} else {
					delete(r.routes, a)
				}
			}
			list := slices.DeleteFunc(r.sessions[cluster], func(x *entry) bool { return x == e })
			if len(list) == 0 {
				delete(r.sessions, cluster)
			} else {
				r.sessions[cluster] = list
			}
			left := len(list)
			r.mu.Unlock()
			r.metrics.sessionDown()
			r.log.Info("agent disconnected", "cluster", cluster, "session", e.info.ID, "sessions", left)
			if left == 0 && r.onEmpty != nil {
				r.onEmpty(cluster)
			}
			r.notify(cluster)
		})
	}
}

// Get returns the session that should carry a new stream to cluster.
func (r *Registry) Get(cluster string) (*tunnel.Session, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.sessions[cluster]
	for i := len(list) - 1; i >= 0; i-- {
		select {
		case <-list[i].sess.Done():
			continue
		default:
			return list[i].sess, nil
		}
	}
	return nil, &ClusterError{Cluster: cluster, Err: ErrNotConnected}
}

// ErrNoRoute: no connected agent advertised the address.
var ErrNoRoute = errors.New("no agent advertises this address")

// Route returns the cluster and session of the agent that owns addr.
func (r *Registry) Route(addr netip.Addr) (cluster string, sess *tunnel.Session, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.routes[addr.Unmap()]
	for i := len(list) - 1; i >= 0; i-- {
		select {
		case <-list[i].sess.Done():
			continue
		default:
			return list[i].info.Cluster, list[i].sess, nil
		}
	}
	return "", nil, ErrNoRoute
}

// Sessions lists the connected sessions, by cluster then age.
func (r *Registry) Sessions() []SessionInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []SessionInfo
	for _, list := range r.sessions {
		for _, e := range list {
			info := e.info
			info.Streams = e.sess.NumStreams()
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Ping measures the round trip of one session, by its ID.
func (r *Registry) Ping(cluster string, id uint64) (time.Duration, error) {
	r.mu.RLock()
	var sess *tunnel.Session
	for _, e := range r.sessions[cluster] {
		if e.info.ID == id {
			sess = e.sess
		}
	}
	r.mu.RUnlock()
	if sess == nil {
		return 0, &ClusterError{Cluster: cluster, Err: ErrNotConnected}
	}
	return sess.Ping()
}

// CloseAll ends every session (hub shutdown).
func (r *Registry) CloseAll() {
	r.mu.RLock()
	var all []*tunnel.Session
	for _, list := range r.sessions {
		for _, e := range list {
			all = append(all, e.sess)
		}
	}
	r.mu.RUnlock()
	for _, s := range all {
		_ = s.Close()
	}
}
