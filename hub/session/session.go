package session

import (
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// Agent is what an agent said about itself when it connected.
type Agent struct {
	Version string
	// Node and Addresses are set for agents in node mode.
	Node      string
	Addresses []netip.Addr
}

// Info describes one registered session, as the status page shows it.
type Info struct {
	Cluster      string    `json:"cluster"`
	ID           uint64    `json:"id"`
	Remote       string    `json:"remote"`
	AgentVersion string    `json:"agentVersion"`
	Since        time.Time `json:"since"`
	Streams      int       `json:"streams"`
	// RTT is the round trip the prober last measured, in the background.
	RTT time.Duration `json:"-"`
	// Node and Addresses are set for agents in node mode.
	Node      string       `json:"node,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
}

// Session is one agent's tunnel registered on this hub: the tunnel, the
// cluster it serves and what its agent advertised, and the pool of HTTP
// connections to the member's API server over its streams, which lives
// and dies with it.
type Session struct {
	info   Info
	tunnel *tunnel.Session
	rtt    atomic.Int64 // nanoseconds, from the prober
	// retired is set once the session's credential expired or it reached
	// its maximum age: it carries no new streams while it winds down.
	retired atomic.Bool

	mu   sync.Mutex
	http *http.Transport // built on first use by Dialer.HTTP
}

// Cluster is the name of the cluster the session serves.
func (s *Session) Cluster() string { return s.info.Cluster }

// Info describes the session now.
func (s *Session) Info() Info {
	info := s.info
	info.Streams = s.tunnel.NumStreams()
	info.RTT = time.Duration(s.rtt.Load())
	return info
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.tunnel.Done() }

// Ping measures the session's round trip.
func (s *Session) Ping() (time.Duration, error) { return s.tunnel.Ping() }

func (s *Session) alive() bool {
	select {
	case <-s.tunnel.Done():
		return false
	default:
		return true
	}
}

// transport returns the session's HTTP transport, building it with build
// the first time.
func (s *Session) transport(build func() *http.Transport) *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http == nil {
		s.http = build()
	}
	return s.http
}

// closeIdle drops pooled HTTP connections once the session has left the
// registry; their streams are gone with it.
func (s *Session) closeIdle() {
	s.mu.Lock()
	t := s.http
	s.mu.Unlock()
	if t != nil {
		t.CloseIdleConnections()
	}
}
