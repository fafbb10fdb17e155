package hub

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Server is a hub: the packages below wired together, and the listeners
// that serve them.
type Server struct {
	cfg      Config
	sessions *session.Registry
	handler  http.Handler // the TLS listener's
	admin    http.Handler // the admin listener's
	connect  *frontend.Connect
	// leadership is set with a host cluster: a standby refuses agents and
	// callers until it leads.
	leadership  *fleet.Leadership
	ready       atomic.Bool
	addr        atomic.Value // net.Addr of the TLS listener
	connectAddr atomic.Value // net.Addr of the CONNECT TCP listener
}

// New assembles the hub from cfg. Nothing runs until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.ClusterSuffix == "" {
		cfg.ClusterSuffix = frontend.DefaultClusterSuffix
	}
	tm := session.NewMetrics(cfg.Metrics)
	s := &Server{cfg: cfg, sessions: session.NewRegistry(cfg.Log.Named(logging.Registry), tm)}
	dialer := session.NewDialer(s.sessions, tm, cfg.DialTimeout)
	mux := http.NewServeMux()
	if err := s.mountFrontEnds(mux, dialer, frontend.NewMetrics(cfg.Metrics, tm)); err != nil {
		return nil, err
	}
	if err := s.mountEndpoint(mux, tm); err != nil {
		return nil, err
	}
	if cfg.Host != nil {
		if err := s.wireHost(mux, dialer); err != nil {
			return nil, err
		}
	}
	s.admin = s.adminHandler()
	for _, p := range []string{"GET /healthz", "GET /readyz", "GET /metrics"} {
		mux.Handle(p, s.admin)
	}
	s.handler = s.refuseOnStandby(mux)
	return s, nil
}

// mountFrontEnds builds the gateway, the status page and the CONNECT
// proxy, all admitting callers through one admission check.
func (s *Server) mountFrontEnds(mux *http.ServeMux, dialer *session.Dialer, m *frontend.Metrics) error {
	cfg := s.cfg
	admission := auth.NewAdmission(cfg.Authz, cfg.Clusters, s.sessions)
	gw, err := frontend.NewGateway(frontend.GatewayConfig{
		Authn: cfg.Authn, Admission: admission, Dialer: dialer, Metrics: m, Log: cfg.Log.Named(logging.Gateway),
	})
	if err != nil {
		return err
	}
	status, err := frontend.NewStatusPage(cfg.Authn, admission, s.sessions)
	if err != nil {
		return err
	}
	s.connect, err = frontend.NewConnect(frontend.ConnectConfig{
		Authn: cfg.Authn, Admission: admission, Sessions: s.sessions, Dialer: dialer,
		Suffix: cfg.ClusterSuffix, Metrics: m, Log: cfg.Log.Named(logging.Connect),
	})
	if err != nil {
		return err
	}
	mux.Handle("/clusters/{name}/{path...}", gw)
	mux.Handle("/clusters/{name}", gw)
	mux.Handle("GET /status", status)
	return nil
}

// mountEndpoint builds the tunnel endpoint agents dial.
func (s *Server) mountEndpoint(mux *http.ServeMux, m *session.Metrics) error {
	tcfg := *s.cfg.Tunnel
	tcfg.Logger = s.cfg.Log.Named(logging.Tunnel)
	// Agents open no streams to the hub, so a deep accept queue per idle
	// session would only cost memory.
	tcfg.AcceptBacklog = min(tcfg.AcceptBacklog, 16)
	ecfg := session.EndpointConfig{Auth: s.cfg.AgentAuth, Tunnel: &tcfg, Log: tcfg.Logger}
	if s.cfg.Host != nil {
		ecfg.NodeCIDRs = s.cfg.Host.Clusters.NodeCIDRs
	}
	ep, err := session.NewEndpoint(s.sessions, m, ecfg)
	if err != nil {
		return err
	}
	mux.Handle(tunnel.Path, ep)
	return nil
}

// wireHost adds what a host cluster brings: enrollment, revocation of
// removed clusters, Cluster status, the token janitor, the Propagation
// controller and leadership.
func (s *Server) wireHost(mux *http.ServeMux, dialer *session.Dialer) error {
	h, log := s.cfg.Host, s.cfg.Log.Named(logging.Enroll)
	tokens := &enrollment.BootstrapTokens{Reader: h.Direct, Writer: h.Direct, Namespace: h.Namespace}
	enroller, err := enrollment.New(enrollment.Config{
		Tokens: tokens, CA: h.CA, Clusters: h.Clusters, Sessions: s.sessions,
		Validity: h.AgentCertValidity, Log: log, Metrics: enrollment.NewMetrics(s.cfg.Metrics),
	})
	if err != nil {
		return err
	}
	enroller.Register(mux)
	h.Clusters.OnGone(func(c string) {
		if n := s.sessions.Close(c); n > 0 {
			log.Info("closed sessions of a removed cluster", "cluster", c, "sessions", n)
		}
	})
	m := members{dialer: dialer, sessions: s.sessions}
	status := fleet.NewStatusUpdater(fleet.StatusConfig{
		Client: h.Manager.GetClient(), Clusters: h.Clusters, Sessions: s.sessions, Member: m.Config,
		Interval: h.StatusInterval, Heartbeat: h.Heartbeat, ProbeTimeout: 5 * time.Second,
		Replica: h.ReplicaName, Log: s.cfg.Log.Named(logging.Status),
	})
	if err := h.Manager.Add(status); err != nil {
		return err
	}
	if err := h.Manager.Add(enrollment.NewJanitor(tokens, 10*time.Minute, log)); err != nil {
		return err
	}
	if h.Propagation != nil {
		if err := propagation.Setup(h.Manager, m, *h.Propagation); err != nil {
			return err
		}
	}
	s.leadership = fleet.NewLeadership(h.Host, h.PodName, h.ReplicaName, s.cfg.Log)
	return nil
}

// Sessions is the registry of agent sessions (status, tests).
func (s *Server) Sessions() *session.Registry { return s.sessions }

// Handler is the TLS listener's handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the bound TLS address once Run is listening.
func (s *Server) Addr() net.Addr {
	a, _ := s.addr.Load().(net.Addr)
	return a
}

// ConnectAddr is the bound CONNECT TCP address once Run is listening.
func (s *Server) ConnectAddr() net.Addr {
	a, _ := s.connectAddr.Load().(net.Addr)
	return a
}
