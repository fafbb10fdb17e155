package session

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
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
	// Features are the tunnel features the agent announced
	// (tunnel.HeaderAgentFeatures).
	Features []string
	// CertNotAfter is when the agent's certificate expires (zero for an
	// agent authenticated by a token).
	CertNotAfter time.Time
	// ClockOffset, when HasClock, is the agent's clock minus the hub's
	// when the upgrade arrived (tunnel.HeaderAgentTime).
	ClockOffset time.Duration
	HasClock    bool
}

// maxFeatures bounds what an agent may announce; more are ignored.
const maxFeatures = 16

// parseFeatures reads an upgrade's tunnel.HeaderAgentFeatures.
func parseFeatures(h http.Header) []string {
	var out []string
	for _, v := range h.Values(tunnel.HeaderAgentFeatures) {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" && len(out) < maxFeatures {
				out = append(out, f)
			}
		}
	}
	return out
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

	features []string // what the agent announced
	agent    Agent    // what it said when it connected

	// bytesTx and bytesRx count the payload bytes of the session's
	// streams (tx: hub to agent), for its cluster's tunnel health.
	bytesTx, bytesRx atomic.Int64
	// ending is why the session ends, once this side decided it (the
	// first reason set wins); see markEnd.
	ending atomic.Pointer[string]

	mu   sync.Mutex
	http map[tunnel.Kind]*http.Transport // by stream kind, built on first use by Dialer
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

// Bytes are the payload bytes the session's streams carried so far (tx:
// hub to agent).
func (s *Session) Bytes() (tx, rx int64) { return s.bytesTx.Load(), s.bytesRx.Load() }

// CertNotAfter is when the agent's certificate expires (zero for a token).
func (s *Session) CertNotAfter() time.Time { return s.agent.CertNotAfter }

// markEnd records why this side ends the session. The first reason
// stands: a session asked to move at its expiry and closed when its
// grace ran out ended because it expired.
func (s *Session) markEnd(reason string) { s.ending.CompareAndSwap(nil, &reason) }

// endReason is the reason markEnd recorded, or "".
func (s *Session) endReason() string {
	if p := s.ending.Load(); p != nil {
		return *p
	}
	return ""
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

// Serves says whether the session's agent announced feature f.
func (s *Session) Serves(f string) bool { return slices.Contains(s.features, f) }

// open opens a stream for req. The hub's own API requests go as
// tunnel.KindHubAPIServer only to an agent that serves the kind; an older
// agent gets them as tunnel.KindAPIServer, as before the kind existed.
func (s *Session) open(ctx context.Context, req tunnel.Request) (net.Conn, error) {
	if req.Kind == tunnel.KindHubAPIServer && !s.Serves(tunnel.FeatureHubAPIServer) {
		req.Kind = tunnel.KindAPIServer
	}
	return s.tunnel.Open(ctx, req)
}

// openEarly is open without waiting for the agent's reply (tunnel.Session.OpenEarly).
func (s *Session) openEarly(ctx context.Context, req tunnel.Request) (*tunnel.EarlyConn, error) {
	if req.Kind == tunnel.KindHubAPIServer && !s.Serves(tunnel.FeatureHubAPIServer) {
		req.Kind = tunnel.KindAPIServer
	}
	return s.tunnel.OpenEarly(ctx, req)
}

// transport returns the session's HTTP transport for streams of kind,
// building it with build the first time.
func (s *Session) transport(kind tunnel.Kind, build func() *http.Transport) *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http == nil {
		s.http = map[tunnel.Kind]*http.Transport{}
	}
	t := s.http[kind]
	if t == nil {
		t = build()
		s.http[kind] = t
	}
	return t
}

// closeIdle drops pooled HTTP connections once the session has left the
// registry; their streams are gone with it.
func (s *Session) closeIdle() {
	s.mu.Lock()
	ts := make([]*http.Transport, 0, len(s.http))
	for _, t := range s.http {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	for _, t := range ts {
		t.CloseIdleConnections()
	}
}
