package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Config is everything a hub server needs; Options builds it from flags.
type Config struct {
	// Listen is the TLS address for agents and gateway callers.
	Listen string
	TLS    *tls.Config
	// AdminListen, when set, serves /healthz, /readyz and /metrics in plain
	// HTTP for probes and scrapers.
	AdminListen string
	// Profiling serves /debug/pprof/ on AdminListen.
	Profiling bool

	// ConnectListen, when set, serves the CONNECT front end on TCP, in TLS
	// (with client certificates) when ConnectTLS is set.
	ConnectListen string
	ConnectTLS    bool
	// ConnectUDS, when set, serves the CONNECT front end on a Unix socket
	// whose callers all act as ConnectUDSUser (the socket's permissions
	// are the authentication, as for a kube-apiserver egress selector).
	ConnectUDS     string
	ConnectUDSUser string
	ClusterSuffix  string

	AgentAuth AgentAuthenticator
	Clusters  ClusterSource
	Authn     Authenticator
	Authz     Authorizer

	// Host, when set, is the host cluster holding Cluster objects
	// (--registry=kube). HostClusters, CA and the durations below go
	// with it: the hub then serves enrollment, revokes removed clusters'
	// sessions and writes Cluster status.
	Host              *Host
	HostClusters      *HostClusters
	CA                *CA
	AgentCertValidity time.Duration
	StatusInterval    time.Duration
	Heartbeat         time.Duration
	ReplicaName       string
	// PodName, when the hub runs in a Pod, is labelled while it leads.
	PodName string

	Tunnel          *tunnel.Config
	DialTimeout     time.Duration
	ShutdownTimeout time.Duration

	Log      hclog.Logger
	Registry *prometheus.Registry
}

// Server is a running hub.
type Server struct {
	cfg      Config
	registry *Registry
	metrics  *Metrics
	handler  http.Handler
	admin    http.Handler
	connect  *ConnectProxy
	gateway  *Gateway
	ready    atomic.Bool
	// standby is set while another replica leads (--leader-elect).
	standby     atomic.Bool
	addr        atomic.Value // net.Addr of the TLS listener
	connectAddr atomic.Value // net.Addr of the CONNECT TCP listener
	// stopSessions ends every tunnel session's Serve.
	stopSessions context.CancelFunc
}

// New assembles the hub from cfg.
func New(cfg Config) (*Server, error) {
	if cfg.TLS == nil || cfg.AgentAuth == nil || cfg.Clusters == nil || cfg.Authn == nil || cfg.Authz == nil || cfg.Log == nil || cfg.Registry == nil || cfg.Tunnel == nil {
		return nil, errors.New("hub config: TLS, AgentAuth, Clusters, Authn, Authz, Tunnel, Log and Registry are required")
	}
	s := &Server{cfg: cfg}
	s.metrics = NewMetrics(cfg.Registry)
	s.registry = NewRegistry(cfg.Log.Named(logging.Registry), s.metrics)
	gw := NewGateway(&Gateway{
		Authn: cfg.Authn, Authz: cfg.Authz, Clusters: cfg.Clusters, Registry: s.registry,
		Log: cfg.Log.Named(logging.Gateway), Metrics: s.metrics, DialTimeout: cfg.DialTimeout,
	})
	s.gateway = gw
	suffix := cfg.ClusterSuffix
	if suffix == "" {
		suffix = DefaultClusterSuffix
	}
	s.connect = &ConnectProxy{
		Authn: cfg.Authn, Authz: cfg.Authz, Clusters: cfg.Clusters, Registry: s.registry,
		Suffix: suffix, DialTimeout: cfg.DialTimeout, Log: cfg.Log.Named(logging.Connect), Metrics: s.metrics,
	}
	tcfg := *cfg.Tunnel
	tcfg.Logger = cfg.Log.Named(logging.Tunnel)
	// Agents open no streams to the hub, so a deep accept queue per idle
	// session would only cost memory.
	tcfg.AcceptBacklog = min(tcfg.AcceptBacklog, 16)
	ep := &Endpoint{Auth: cfg.AgentAuth, Registry: s.registry, Config: &tcfg, Log: cfg.Log.Named(logging.Tunnel), Metrics: s.metrics}

	admin := http.NewServeMux()
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	admin.HandleFunc("GET /readyz", s.readyz)
	admin.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	if cfg.Profiling && cfg.AdminListen != "" {
		// Only on the plain admin listener, which should stay private.
		admin.HandleFunc("/debug/pprof/", pprof.Index)
		admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.admin = admin

	mux := http.NewServeMux()
	if cfg.Host != nil {
		if err := s.wireHost(mux, ep); err != nil {
			return nil, err
		}
	}
	mux.Handle(tunnel.Path, ep)
	mux.Handle("/clusters/{name}/{path...}", gw)
	mux.Handle("/clusters/{name}", gw)
	mux.Handle("GET /status", &statusPage{authn: cfg.Authn, authz: cfg.Authz, registry: s.registry})
	mux.Handle("GET /healthz", admin)
	mux.Handle("GET /readyz", admin)
	mux.Handle("GET /metrics", admin)
	s.handler = s.refuseOnStandby(mux)
	// Sessions end with the hub, including any that connect while it drains.
	ep.ctx, s.stopSessions = context.WithCancel(context.Background())
	return s, nil
}

func (s *Server) connectServer(connCtx func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler:           s.connect,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext:       connCtx,
		ErrorLog:          s.cfg.Log.Named(logging.Connect).StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		_ = l.Close()
	}
}

// ConnectAddr is the bound CONNECT TCP address once Run is listening.
func (s *Server) ConnectAddr() net.Addr {
	a, _ := s.connectAddr.Load().(net.Addr)
	return a
}

// Registry exposes the session registry (status, tests).
func (s *Server) Registry() *Registry { return s.registry }

// Handler is the TLS listener's handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the bound TLS address once Run is listening.
func (s *Server) Addr() net.Addr {
	a, _ := s.addr.Load().(net.Addr)
	return a
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "not ready: listeners are not serving", http.StatusServiceUnavailable)
		return
	}
	if s.standby.Load() {
		http.Error(w, "not ready: standing by, another hub replica leads", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// wireHost adds enrollment, revocation, node CIDR bounds, Cluster status
// and the token janitor.
func (s *Server) wireHost(mux *http.ServeMux, ep *Endpoint) error {
	cfg := s.cfg
	if cfg.HostClusters == nil || cfg.CA == nil {
		return errors.New("hub config: Host needs HostClusters and CA")
	}
	log := cfg.Log.Named(logging.Enroll)
	tokens := &BootstrapTokens{Reader: cfg.Host.Direct, Writer: cfg.Host.Direct, Namespace: cfg.Host.Namespace}
	(&Enroller{
		Tokens: tokens, CA: cfg.CA, Clusters: cfg.HostClusters, Registry: s.registry,
		Validity: cfg.AgentCertValidity, Log: log, Metrics: s.metrics,
	}).Register(mux)
	cfg.HostClusters.OnGone(func(c string) {
		if n := s.registry.Close(c); n > 0 {
			log.Info("closed sessions of a removed cluster", "cluster", c, "sessions", n)
		}
	})
	ep.NodeCIDRs = cfg.HostClusters.NodeCIDRs
	upd := &ClusterStatusUpdater{
		Client: cfg.Host.Manager.GetClient(), Clusters: cfg.HostClusters, Registry: s.registry,
		Member: func(c string) *rest.Config {
			return s.MemberConfig(c, &User{Name: HubUser, Groups: []string{HubPusherGroup}})
		},
		Interval: cfg.StatusInterval, Heartbeat: cfg.Heartbeat, ProbeTimeout: 5 * time.Second,
		Replica: cfg.ReplicaName, Log: cfg.Log.Named(logging.Status),
	}
	if err := cfg.Host.Manager.Add(runnable(upd.Run)); err != nil {
		return err
	}
	return cfg.Host.Manager.Add(tokenJanitor(tokens, 10*time.Minute, log))
}

// refuseOnStandby answers 503 to everything but probes and metrics while
// another replica leads, so an agent or caller that reaches a standby
// directly retries rather than registering where nobody looks.
func (s *Server) refuseOnStandby(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.standby.Load() {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
			default:
				w.Header().Set("Retry-After", "5")
				kubestatus.Write(w, http.StatusServiceUnavailable, "this hub replica is a standby; another replica leads")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Run serves until ctx ends, then drains for up to ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Host != nil {
		// The manager (informers, controllers) lives exactly as long as
		// the listeners: agents are only admitted once the Cluster
		// informer has synced.
		mctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.cfg.Host.Manager.Start(mctx) }()
		defer func() { stop(); <-done }()
		if !s.cfg.Host.Manager.GetCache().WaitForCacheSync(mctx) {
			stop()
			err := <-done
			done <- err // for the deferred receive
			return fmt.Errorf("host cluster: caches did not sync (is the Cluster CRD installed?): %v", err)
		}
		// A standby serves probes and metrics but is not ready, and
		// refuses agents and callers, until it leads.
		s.standby.Store(true)
		host, pod := s.cfg.Host, s.cfg.PodName
		// A label left by an earlier run of this Pod that lost the lease
		// must go before the Service sends traffic here again.
		if err := setLeaderLabel(mctx, host.Direct, host.Namespace, pod, false); err != nil {
			s.cfg.Log.Warn("cannot clear the leader label", "error", err)
		}
		go func() {
			select {
			case <-host.Manager.Elected():
				s.standby.Store(false)
				s.cfg.Log.Info("leading: serving agents and callers", "replica", s.cfg.ReplicaName)
				if err := setLeaderLabel(mctx, host.Direct, host.Namespace, pod, true); err != nil {
					s.cfg.Log.Error("cannot label this pod as leader; the Service will not route here", "error", err)
				}
			case <-mctx.Done():
			}
		}()
		defer func() {
			if !s.standby.Load() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = setLeaderLabel(cctx, host.Direct, host.Namespace, pod, false)
			}
		}()
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	s.addr.Store(ln.Addr())
	servers := []*http.Server{{
		Handler:           s.handler,
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		// No read or write timeout: watches and tunnels live for hours.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       s.cfg.Log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}}
	listeners := []net.Listener{tls.NewListener(ln, s.cfg.TLS)}
	if s.cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", s.cfg.AdminListen)
		if err != nil {
			closeAll(listeners)
			return fmt.Errorf("listen %s: %w", s.cfg.AdminListen, err)
		}
		servers = append(servers, &http.Server{Handler: s.admin, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, aln)
	}
	if s.cfg.ConnectListen != "" {
		cln, err := net.Listen("tcp", s.cfg.ConnectListen)
		if err != nil {
			closeAll(listeners)
			return fmt.Errorf("listen %s: %w", s.cfg.ConnectListen, err)
		}
		s.connectAddr.Store(cln.Addr())
		if s.cfg.ConnectTLS {
			cln = tls.NewListener(cln, s.cfg.TLS)
		}
		servers = append(servers, s.connectServer(nil))
		listeners = append(listeners, cln)
	}
	if s.cfg.ConnectUDS != "" {
		_ = os.Remove(s.cfg.ConnectUDS)
		uln, err := net.Listen("unix", s.cfg.ConnectUDS)
		if err != nil {
			closeAll(listeners)
			return fmt.Errorf("listen %s: %w", s.cfg.ConnectUDS, err)
		}
		user := &User{Name: s.cfg.ConnectUDSUser}
		servers = append(servers, s.connectServer(func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, udsUserKey{}, user)
		}))
		listeners = append(listeners, uln)
	}
	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := servers[i].Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	s.ready.Store(true)
	s.cfg.Log.Info("hub serving", "listen", ln.Addr().String(), "admin", s.cfg.AdminListen,
		"connect", s.cfg.ConnectListen, "connect_uds", s.cfg.ConnectUDS)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	// Hijacked tunnel connections are not tracked by Shutdown: end them.
	s.stopSessions()
	s.registry.CloseAll()
	for _, srv := range servers {
		_ = srv.Shutdown(sctx)
	}
	wg.Wait()
	return err
}
