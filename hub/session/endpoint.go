package session

import (
	"context"
	"errors"
	"net/http"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/pkg/kubestatus"
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
	Log       hclog.Logger
}

// Endpoint serves /v1/tunnel: it authenticates an agent, upgrades, and
// keeps the session registered for as long as it lives.
type Endpoint struct {
	cfg      EndpointConfig
	registry *Registry
	metrics  *Metrics
}

// NewEndpoint returns the endpoint that registers sessions in reg.
func NewEndpoint(reg *Registry, m *Metrics, cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Auth == nil || cfg.Tunnel == nil || cfg.Log == nil {
		return nil, errors.New("tunnel endpoint: Auth, Tunnel and Log are required")
	}
	return &Endpoint{cfg: cfg, registry: reg, metrics: m}, nil
}

func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		kubestatus.Write(w, http.StatusMethodNotAllowed, "the tunnel endpoint takes GET with a websocket upgrade")
		return
	}
	cluster, err := e.cfg.Auth.AuthenticateAgent(r)
	if err != nil {
		e.metrics.connect("unauthenticated")
		e.metrics.Refused(ReasonAgentAuth)
		e.cfg.Log.Warn("refused agent", "remote", r.RemoteAddr, "cluster", r.Header.Get(tunnel.HeaderCluster), "error", err)
		code := http.StatusUnauthorized
		if errors.Is(err, ErrAgentForbidden) {
			code = http.StatusForbidden
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backhaul"`)
		}
		http.Error(w, err.Error(), code)
		return
	}
	agent, err := e.agent(r, cluster)
	if err != nil {
		e.metrics.connect("bad_request")
		e.cfg.Log.Warn("refused agent", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ts, err := tunnel.Accept(w, r, e.cfg.Tunnel)
	if err != nil {
		if errors.Is(err, tunnel.ErrVersion) {
			e.metrics.Refused(ReasonVersion)
		}
		e.metrics.connect("upgrade_failed")
		e.cfg.Log.Warn("agent upgrade failed", "cluster", cluster, "remote", r.RemoteAddr, "error", err)
		return
	}
	e.metrics.connect("ok")
	e.serve(r, cluster, ts, agent)
}

// agent reads what the upgrade says about the agent, checking node
// addresses against the cluster's bounds.
func (e *Endpoint) agent(r *http.Request, cluster string) (Agent, error) {
	addrs, err := parseNodeAddresses(r.Header.Get(tunnel.HeaderNodeAddresses))
	if err == nil && e.cfg.NodeCIDRs != nil {
		err = withinCIDRs(addrs, e.cfg.NodeCIDRs(cluster))
	}
	if err != nil {
		return Agent{}, err
	}
	return Agent{Version: r.Header.Get(tunnel.HeaderAgentVersion), Node: r.Header.Get(tunnel.HeaderNode), Addresses: addrs}, nil
}

// serve keeps ts registered until it ends: the agent closes it, a ping
// goes unanswered, or the registry closes it (revocation, shutdown).
func (e *Endpoint) serve(r *http.Request, cluster string, ts *tunnel.Session, a Agent) {
	_, remove, err := e.registry.Add(cluster, ts, a)
	if err != nil {
		e.cfg.Log.Debug("session refused", "cluster", cluster, "reason", err)
		_ = ts.Close()
		return
	}
	defer remove()
	// Agents open no streams towards the hub today; refuse any politely so
	// the session's accept queue never fills.
	err = ts.Serve(r.Context(), func(_ context.Context, in *tunnel.Incoming) {
		_ = in.Reject(tunnel.CodeNotAllowed, "the hub accepts no streams from agents")
	})
	e.cfg.Log.Debug("session ended", "cluster", cluster, "reason", err)
}
