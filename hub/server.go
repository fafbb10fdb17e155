package hub

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"backhaul.io/backhaul/hub/audit"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/peer"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Server is a hub replica: the packages below wired together, and the
// listeners that serve them. Every replica serves every cluster: what it
// does not hold a session of, it forwards to a peer that does.
type Server struct {
	cfg      Config
	sessions *session.Registry
	dialer   *session.Dialer
	prober   *session.Prober
	tracker  *session.Tracker
	endpoint *session.Endpoint
	gateway  *frontend.Gateway
	connect  *frontend.Connect
	audit    *audit.Logger // nil without --audit-log-path
	status   *statuspage.Page
	events   *events
	health   hostHealth
	handler  http.Handler // the TLS listener's
	admin    http.Handler // the admin listener's

	// With a host cluster: the session directory, the peers it feeds, and
	// the singleton work (nil without leader election: this replica does
	// it).
	directory *fleet.Directory
	peers     *peer.Manager
	identity  *peer.Identity
	singleton *fleet.Singleton
	// propMetrics are the Propagation controller's series, fed by the
	// controller of each leadership term.
	propMetrics *propagation.Metrics
	// fleetMetrics are the fleet's health series, fed by the status
	// writer of each leadership term.
	fleetMetrics *fleet.Metrics

	ready       atomic.Bool
	draining    atomic.Bool
	addr        atomic.Value // net.Addr of the TLS listener
	connectAddr atomic.Value // net.Addr of the CONNECT TCP listener
	peerAddr    atomic.Value // net.Addr of the peer listener
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
	// s.dialer is set below, before anything runs.
	s.events = newEvents(func(cluster string) bool { return s.dialer.Connected(cluster) })
	s.sessions.Watch(s.events.fire)
	if cfg.Host != nil {
		s.health.probe = cfg.Host.Answers
		if cfg.Host.Propagation != nil {
			s.propMetrics = propagation.NewMetrics(cfg.Metrics)
		}
	}
	var peers session.Peers = session.NoPeers{}
	if h := cfg.Host; h != nil && h.PeerListen != "" {
		if err := s.newPeers(); err != nil {
			return nil, err
		}
		peers = s.peers
	}
	s.dialer = session.NewDialer(s.sessions, peers, tm, cfg.DialTimeout)
	if err := s.newTracker(tm); err != nil {
		return nil, err
	}
	s.prober = session.NewProber(s.dialer, session.ProberConfig{
		Interval: cfg.ProbeInterval, VersionEvery: 10 * cfg.ProbeInterval, Timeout: cfg.ProbeInterval / 2,
		Identity: hubIdentity(), OnChange: s.holdingsChanged, Tracker: s.tracker, Log: cfg.Log.Named(logging.Status),
	})
	var err error
	if s.audit, err = audit.New(cfg.Audit, cfg.Log.Named(logging.Audit), cfg.Metrics); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	if err := s.mountFrontEnds(mux, frontend.NewMetrics(cfg.Metrics, tm)); err != nil {
		return nil, err
	}
	if err := s.mountEndpoint(mux, tm); err != nil {
		return nil, err
	}
	if cfg.Host != nil {
		if err := s.wireHost(mux); err != nil {
			return nil, err
		}
	}
	s.registerGauges()
	s.admin = s.adminHandler()
	// Probes may reach the public listener; /metrics may not (it says
	// which clusters and callers are busy, and costs a scrape to anyone):
	// it is served on the private --metrics-listen only, and here answers
	// the 404 Status below.
	for _, p := range []string{"/healthz", "/readyz"} {
		mux.Handle("GET "+p, s.admin)
		mux.Handle(p, kubestatus.MethodNotAllowed(http.MethodGet))
	}
	// Every other path (also /clusters and /clusters/) answers as an API
	// server would, with a Status a client can decode.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		kubestatus.Write(w, http.StatusNotFound, fmt.Sprintf("%s not found: the hub serves a cluster's Kubernetes API at /clusters/NAME/", r.URL.Path))
	})
	s.handler = s.closeWhenUnwell(mux)
	return s, nil
}

// mountFrontEnds builds the gateway, the status page and the CONNECT
// proxy, all admitting callers through one admission check.
func (s *Server) mountFrontEnds(mux *http.ServeMux, m *frontend.Metrics) error {
	cfg := s.cfg
	// Reviews the host could not answer make this replica not ready.
	cfg.Authn, cfg.Authz = s.health.authn(cfg.Authn), s.health.authz(cfg.Authz)
	admission := auth.NewAdmission(cfg.Authz, cfg.Clusters, s.dialer)
	lc := cfg.Limits
	lc.Metrics, lc.Log = m, cfg.Log.Named(frontend.LimitsLogName)
	lc.RetryAfter = cmp.Or(lc.RetryAfter, frontend.DefaultLimitRetryAfter)
	limits, err := frontend.NewLimits(lc)
	if err != nil {
		return err
	}
	rc := cfg.Recording
	rc.Metrics, rc.Log = recording.NewMetrics(cfg.Metrics), cfg.Log.Named(logging.Recording)
	recorder, err := recording.New(rc)
	if err != nil {
		return err
	}
	s.gateway, err = frontend.NewGateway(frontend.GatewayConfig{
		Authn: cfg.Authn, Admission: admission, Dialer: s.dialer, Mapping: cfg.Mapping, Limits: limits, Audit: s.audit, Metrics: m, Log: cfg.Log.Named(logging.Gateway),
		Recorder: recorder,
	})
	if err != nil {
		return err
	}
	if s.status, err = s.newStatusPage(cfg.Authn, cfg.Authz); err != nil {
		return err
	}
	s.connect, err = frontend.NewConnect(frontend.ConnectConfig{
		Authn: cfg.Authn, Admission: admission, Dialer: s.dialer, Limits: limits, Audit: s.audit,
		Suffix: cfg.ClusterSuffix, Metrics: m, Log: cfg.Log.Named(logging.Connect),
		InsecureCredentials: cfg.ConnectInsecureCredentials,
		RecordingRequired:   rc.Mode == recording.Required,
	})
	if err != nil {
		return err
	}
	mux.Handle("/clusters/{name}/{path...}", s.gateway)
	mux.Handle("/clusters/{name}", s.gateway)
	s.status.Register(mux)
	return nil
}

// newStatusPage builds the status page over the registry's Cluster
// objects (the host manager's cache) or registered names, this replica's
// sessions and the prober's measurements.
func (s *Server) newStatusPage(authn auth.Authenticator, authz auth.Authorizer) (*statuspage.Page, error) {
	src := &statuspage.HubSource{Sessions: s.sessions, Prober: s.prober, Reach: s.dialer, Replica: s.cfg.Replica}
	if h := s.cfg.Host; h != nil {
		src.Registered = h.Manager.GetCache()
	} else if names, ok := s.cfg.Clusters.(statuspage.Names); ok {
		src.Names = names
	}
	pc := statuspage.DefaultConfig()
	pc.Authn, pc.Authz, pc.Source, pc.Sessions, pc.Replica = authn, authz, src, s.sessions, s.cfg.Replica
	pc.Log, pc.Metrics = s.cfg.Log.Named(logging.Status), statuspage.NewMetrics(s.cfg.Metrics)
	return statuspage.New(pc)
}

// mountEndpoint builds the tunnel endpoint agents dial.
func (s *Server) mountEndpoint(mux *http.ServeMux, m *session.Metrics) error {
	tcfg := *s.cfg.Tunnel
	tcfg.Logger = s.cfg.Log.Named(logging.Tunnel)
	// Agents open no streams to the hub, so a deep accept queue per idle
	// session would only cost memory.
	tcfg.AcceptBacklog = min(tcfg.AcceptBacklog, 16)
	ecfg := session.EndpointConfig{
		Auth: s.cfg.AgentAuth, Tunnel: &tcfg, Log: tcfg.Logger,
		Replica: s.cfg.Replica, Replicas: s.dialer.Replicas, MaxHandshakes: s.cfg.MaxHandshakes,
		// A session at its end lets its streams finish as a drain does.
		MaxAge: s.cfg.SessionMaxAge, CloseGrace: s.cfg.ShutdownGrace, Health: s.tracker,
	}
	if s.cfg.Host != nil {
		ecfg.NodeCIDRs = s.cfg.Host.Clusters.NodeCIDRs
	}
	var err error
	if s.endpoint, err = session.NewEndpoint(s.sessions, m, ecfg); err != nil {
		return err
	}
	mux.Handle(tunnel.Path, s.endpoint)
	return nil
}

// Sessions is the registry of agent sessions (status, tests).
func (s *Server) Sessions() *session.Registry { return s.sessions }

// Dialer is the member dialer (tests, benches).
func (s *Server) Dialer() *session.Dialer { return s.dialer }

// Handler is the TLS listener's handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the bound TLS address once Run is listening.
func (s *Server) Addr() net.Addr { return loadAddr(&s.addr) }

// ConnectAddr is the bound CONNECT TCP address once Run is listening.
func (s *Server) ConnectAddr() net.Addr { return loadAddr(&s.connectAddr) }

// PeerAddr is the bound peer listener address once Run is listening.
func (s *Server) PeerAddr() net.Addr { return loadAddr(&s.peerAddr) }

func loadAddr(v *atomic.Value) net.Addr {
	a, _ := v.Load().(net.Addr)
	return a
}

// registerGauges exports what an operator of several replicas watches:
// how many replicas serve, which peers this one is connected to, and
// whether it does the singleton work.
func (s *Server) registerGauges() {
	s.cfg.Metrics.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "backhaul_hub_replicas", Help: "Hub replicas serving, this one included, per the session directory.",
		}, func() float64 { return float64(s.dialer.Replicas()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "backhaul_hub_peer_connections", Help: "Other hub replicas this one has a peer connection with.",
		}, func() float64 {
			if s.peers == nil {
				return 0
			}
			return float64(len(s.peers.Connected()))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "backhaul_hub_singleton_leading", Help: "1 while this replica holds the Lease and does the singleton work (Cluster status, Propagation).",
		}, func() float64 {
			switch {
			case s.cfg.Host == nil:
				return 0 // no host cluster: no singleton work
			case s.singleton == nil || s.singleton.Leading():
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "backhaul_hub_draining", Help: "1 while this replica drains (SIGTERM): its agents are moving away.",
		}, func() float64 {
			if s.draining.Load() {
				return 1
			}
			return 0
		}),
	)
}

// closeWhenUnwell ends each connection after its response while this
// replica drains or cannot reach its host: load balancers only send new
// connections elsewhere, and a keep-alive client would otherwise stay
// (kube-apiserver does the same while it shuts down).
func (s *Server) closeWhenUnwell(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		unwell := s.draining.Load() || !s.hostReachable()
		// An upgrade (exec, agents) takes the connection over anyway.
		if unwell && r.Header.Get("Upgrade") == "" {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
