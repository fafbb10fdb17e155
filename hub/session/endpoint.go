package session

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// AgentAuthenticator decides which cluster, if any, an upgrade request may
// serve. An error wrapping ErrAgentForbidden is answered 403, any other 401.
type AgentAuthenticator interface {
	AuthenticateAgent(r *http.Request) (cluster string, err error)
}

// EndpointConfig is what the tunnel endpoint needs.
type EndpointConfig struct {
	Auth   AgentAuthenticator
	Tunnel *tunnel.Config
	// NodeCIDRs, when set, bounds the node addresses an agent of cluster
	// may advertise (nil result: any routable address).
	NodeCIDRs func(cluster string) []string
	// Replica names this hub replica to agents on the upgrade; Replicas,
	// when set, says how many serve (agents connect to that many at most).
	Replica  string
	Replicas func() int
	// MaxHandshakes bounds upgrades being authenticated and set up at
	// once; past it agents are told 503 and when to come back, so a
	// reconnect storm queues at the agents instead of in the hub's memory.
	MaxHandshakes int
	// MaxAge, when positive, ends every session after at most this long
	// (less up to a fifth, at random), so that credentials that do not
	// expire, static tokens, are authenticated again by a reconnect.
	// Sessions of certificates end at the certificate's expiry anyway.
	MaxAge time.Duration
	// CloseGrace bounds how long a session at the end of its life keeps
	// its streams in flight after the agent is told to reconnect.
	CloseGrace time.Duration
	// Health, when set, records the refusals of agents whose credential
	// names their cluster, and what each session's upgrade said of the
	// agent's certificate and clock.
	Health *Tracker
	Log    hclog.Logger
}

// Endpoint serves /v1/tunnel: it authenticates an agent, upgrades, and
// keeps the session registered for as long as it lives.
type Endpoint struct {
	cfg        EndpointConfig
	registry   *Registry
	metrics    *Metrics
	handshakes chan struct{}
	draining   atomic.Bool
	// refusals logs refused and failed upgrades, which anyone can cause,
	// within a limit (the metrics count every one).
	refusals *logging.Limited
}

// NewEndpoint returns the endpoint that registers sessions in reg.
func NewEndpoint(reg *Registry, m *Metrics, cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Auth == nil || cfg.Tunnel == nil || cfg.Log == nil {
		return nil, errors.New("tunnel endpoint: Auth, Tunnel and Log are required")
	}
	if cfg.MaxHandshakes <= 0 {
		return nil, errors.New("tunnel endpoint: MaxHandshakes must be positive")
	}
	if cfg.Replicas == nil {
		cfg.Replicas = func() int { return 1 }
	}
	if cfg.MaxAge < 0 || cfg.CloseGrace < 0 {
		return nil, errors.New("tunnel endpoint: MaxAge and CloseGrace may not be negative")
	}
	if cfg.CloseGrace == 0 {
		cfg.CloseGrace = tunnel.DefaultDrainGrace
	}
	return &Endpoint{cfg: cfg, registry: reg, metrics: m, handshakes: make(chan struct{}, cfg.MaxHandshakes),
		refusals: logging.NewLimited(cfg.Log, time.Second, 20)}, nil
}

// Drain refuses new sessions from now on: agents are told to come back
// later, which through a load balancer means to another replica.
func (e *Endpoint) Drain() { e.draining.Store(true) }

// retryAfter answers 503 with a Retry-After agents add jitter to.
func retryAfter(w http.ResponseWriter, seconds int, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
	// The agent's retry must reach the load balancer again, not this
	// replica over a kept-alive connection.
	w.Header().Set("Connection", "close")
	http.Error(w, msg, http.StatusServiceUnavailable)
}

func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The agent's clock is compared with this moment, before any wait.
	recv := time.Now()
	if r.Method != http.MethodGet {
		kubestatus.Write(w, http.StatusMethodNotAllowed, "the tunnel endpoint takes GET with a websocket upgrade")
		return
	}
	if e.draining.Load() {
		e.metrics.connect("draining")
		retryAfter(w, 1, "this hub replica is draining; connect to another")
		return
	}
	select {
	case e.handshakes <- struct{}{}:
	default:
		e.metrics.connect("busy")
		e.refusedBusy(r)
		retryAfter(w, 5, "too many agents connecting at once; retry later")
		return
	}
	cluster, ts, a, ok := e.handshake(w, r, recv)
	<-e.handshakes
	if ok {
		e.serve(r, cluster, ts, a)
	}
}

// refused records a refusal of an agent of cluster, for its health.
func (e *Endpoint) refused(cluster, reason string) {
	if e.cfg.Health != nil && cluster != "" {
		e.cfg.Health.refused(cluster, reason)
	}
}

// refusedBusy records a refusal for want of a handshake slot against the
// agent's cluster, when its credential proves one: the TLS handshake
// already cost more than checking it does.
func (e *Endpoint) refusedBusy(r *http.Request) {
	if e.cfg.Health == nil {
		return
	}
	if cluster, err := e.cfg.Auth.AuthenticateAgent(r); err == nil {
		e.refused(cluster, RefusalBusy)
	}
}

// handshake authenticates and upgrades, within the handshake bound.
func (e *Endpoint) handshake(w http.ResponseWriter, r *http.Request, recv time.Time) (string, *tunnel.Session, Agent, bool) {
	cluster, err := e.cfg.Auth.AuthenticateAgent(r)
	if err != nil {
		var ar *AgentRefusal
		if errors.As(err, &ar) {
			e.refused(ar.Cluster, ar.Reason)
		}
		e.metrics.connect("unauthenticated")
		e.metrics.Refused(ReasonAgentAuth)
		e.refusals.Warn("refused agent", "remote", r.RemoteAddr, "cluster", r.Header.Get(tunnel.HeaderCluster), "error", err)
		code := http.StatusUnauthorized
		if errors.Is(err, ErrAgentForbidden) {
			code = http.StatusForbidden
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backhaul"`)
		}
		http.Error(w, err.Error(), code)
		return "", nil, Agent{}, false
	}
	agent, err := e.agent(r, cluster, recv)
	if err != nil {
		e.refused(cluster, RefusalNodeAddresses)
		e.metrics.connect("bad_request")
		e.refusals.Warn("refused agent", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", nil, Agent{}, false
	}
	w.Header().Set(tunnel.HeaderHubReplica, e.cfg.Replica)
	w.Header().Set(tunnel.HeaderHubReplicas, strconv.Itoa(max(e.cfg.Replicas(), 1)))
	ts, err := tunnel.Accept(w, r, e.cfg.Tunnel)
	if err != nil {
		if errors.Is(err, tunnel.ErrVersion) {
			e.metrics.Refused(ReasonVersion)
			e.refused(cluster, RefusalVersion)
		}
		e.metrics.connect("upgrade_failed")
		e.refusals.Warn("agent upgrade failed", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		return "", nil, Agent{}, false
	}
	e.metrics.connect("ok")
	return cluster, ts, agent, true
}

// agent reads what the upgrade says about the agent, checking node
// addresses against the cluster's bounds (the only error).
func (e *Endpoint) agent(r *http.Request, cluster string, recv time.Time) (Agent, error) {
	addrs, err := parseNodeAddresses(r.Header.Get(tunnel.HeaderNodeAddresses))
	if err == nil && e.cfg.NodeCIDRs != nil {
		err = withinCIDRs(addrs, e.cfg.NodeCIDRs(cluster))
	}
	if err != nil {
		return Agent{}, err
	}
	a := Agent{
		Version: r.Header.Get(tunnel.HeaderAgentVersion), Node: r.Header.Get(tunnel.HeaderNode), Addresses: addrs,
		Features: parseFeatures(r.Header),
	}
	a.CertNotAfter, _ = agentCertExpiry(r, recv)
	a.ClockOffset, a.HasClock = parseAgentTime(r.Header, recv)
	return a, nil
}

// serve keeps ts registered until it ends: the agent closes it, a ping
// goes unanswered, or the registry closes it (revocation, shutdown).
func (e *Endpoint) serve(r *http.Request, cluster string, ts *tunnel.Session, a Agent) {
	life := sessionLifetime(r, time.Now(), e.cfg.MaxAge, jitter())
	s, remove, err := e.registry.Add(cluster, ts, a)
	if err != nil {
		e.cfg.Log.Debug("session refused", "cluster", cluster, "reason", err)
		_ = ts.Close()
		return
	}
	defer remove()
	// Revocation closes the sessions a removed cluster has registered; one
	// authenticated just before its cluster went and registered just after
	// that sweep would escape it. So the credentials are checked again now
	// that the session is registered: from here on a revocation finds it.
	if _, err := e.cfg.Auth.AuthenticateAgent(r); err != nil {
		s.markEnd(DisconnectRevoked)
		reason := RefusalRevoked
		if ar := (*AgentRefusal)(nil); errors.As(err, &ar) {
			reason = ar.Reason
		}
		e.refused(cluster, reason)
		e.metrics.Refused(ReasonAgentAuth)
		e.refusals.Warn("revoked while connecting", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		_ = ts.Close()
		return
	}
	// The session may not outlive its credential: retireAt ends it then,
	// or at its maximum age.
	ctx, cancel := context.WithCancel(r.Context())
	if !life.end.IsZero() {
		// Until the session nears its end this is a timer, not a
		// goroutine: a hub holds thousands of idle sessions. Once it has
		// fired, serve waits for retireAt, which returns when ctx ends.
		retired := make(chan struct{})
		wake := time.AfterFunc(time.Until(life.wake(s.info.Since, e.cfg.CloseGrace)), func() {
			defer close(retired)
			e.retireAt(ctx, s, ts, life)
		})
		defer func() {
			if !wake.Stop() {
				<-retired
			}
		}()
	}
	defer cancel()
	// Agents open no streams towards the hub today; refuse any politely so
	// the session's accept queue never fills.
	err = ts.Serve(ctx, func(_ context.Context, in *tunnel.Incoming) {
		_ = in.Reject(tunnel.CodeNotAllowed, "the hub accepts no streams from agents")
	})
	// Unless this side ended it on purpose (marked already), why it ended.
	s.markEnd(endCause(ctx, err))
	e.cfg.Log.Debug("session ended", "cluster", cluster, "reason", err)
}
