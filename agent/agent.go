package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/profiling"
	"backhaul.io/backhaul/tunnel"
)

// Config is everything an agent needs; Options builds it from flags.
type Config struct {
	Dialer  *tunnel.Dialer
	Backoff *tunnel.Backoff
	// HubConnections is how many tunnel sessions to keep, each to a
	// distinct hub replica; zero means 1.
	HubConnections int
	Member         *rest.Config
	Allow          *Allowlist
	DenyGroups     []string
	// AdminListen serves /healthz, /readyz and /metrics.
	AdminListen string
	// Profiling also serves /debug/pprof/ on AdminListen.
	Profiling bool
	Log       hclog.Logger
	Registry  *prometheus.Registry
	// NodeAddresses and KubeletPort, in node mode, admit the node's kubelet
	// to the allowlist (the hub routes these addresses to this agent).
	NodeAddresses []netip.Addr
	KubeletPort   uint16
	// Credentials, when set, enroll and renew the agent's certificate;
	// the tunnel dials only once there is one.
	Credentials *Credentials
	// Resolve looks up names for TCP dials; nil uses the system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// RTTInterval is how often each tunnel's round trip is measured, in
	// the background (zero: DefaultRTTInterval).
	RTTInterval time.Duration
}

// Agent is a running agent.
type Agent struct {
	cfg     Config
	metrics *Metrics
	api     *apiProxy
	// sessions is how many tunnel sessions are up, draining ones included.
	sessions atomic.Int64
	log      hclog.Logger
}

// New builds the agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Dialer == nil || cfg.Member == nil || cfg.Log == nil || cfg.Registry == nil {
		return nil, errors.New("agent config: Dialer, Member, Log and Registry are required")
	}
	if cfg.Allow == nil {
		cfg.Allow = &Allowlist{}
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	api, err := newAPIProxy(cfg.Member, cfg.DenyGroups, cfg.Log.Named(logging.Proxy))
	if err != nil {
		return nil, err
	}
	// By default the only TCP destination is the member's API server.
	if ap, err := netip.ParseAddrPort(api.hostPort()); err == nil {
		cfg.Allow.Add(ap.Addr(), ap.Port())
	}
	for _, ip := range cfg.NodeAddresses {
		cfg.Allow.Add(ip, cfg.KubeletPort)
	}
	return &Agent{cfg: cfg, metrics: NewMetrics(cfg.Registry), api: api, log: cfg.Log}, nil
}

// Connected reports whether at least one tunnel session is up.
func (a *Agent) Connected() bool { return a.sessions.Load() > 0 }

// Sessions is the number of tunnel sessions up, draining ones included.
func (a *Agent) Sessions() int { return int(a.sessions.Load()) }

// Run keeps the tunnel up and serves it until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	// wg.Wait is deferred first so it runs last, after cancel, which is what
	// stops the goroutines it waits for.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// API server streams are served by an http.Server fed from a listener:
	// one for callers' streams, one for the hub's own.
	lis := a.serveAPI(ctx, &wg, a.api)
	hubLis := a.serveAPI(ctx, &wg, a.api.forHub())

	if a.cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", a.cfg.AdminListen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", a.cfg.AdminListen, err)
		}
		// Before any stream is served: the admin port is never a target.
		a.cfg.Allow.DenyLoopbackPort(uint16(aln.Addr().(*net.TCPAddr).Port))
		admin := &http.Server{Handler: a.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = admin.Serve(aln)
		}()
		context.AfterFunc(ctx, func() { _ = admin.Close() })
	}

	if c := a.cfg.Credentials; c != nil {
		if err := c.Ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // shut down while waiting
			}
			return fmt.Errorf("agent credentials: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Run(ctx)
		}()
	}

	rc := &reconnects{}
	rttEvery := cmp.Or(a.cfg.RTTInterval, DefaultRTTInterval)
	sup := &tunnel.Supervisor{
		Dialer:      a.cfg.Dialer,
		Backoff:     a.cfg.Backoff,
		Connections: a.cfg.HubConnections,
		Log:         a.log.Named(logging.Tunnel),
		// Every session serves the hub's streams alike; drains are the
		// supervisor's and never reach serveStream.
		Handler: func(ctx context.Context, in *tunnel.Incoming) { a.serveStream(ctx, lis, hubLis, in) },
		OnConnect: func(s *tunnel.Session) {
			if rc.connected() {
				a.metrics.reconnected.Inc()
			}
			wg.Go(func() { a.pingEvery(ctx, s, rttEvery) })
		},
		OnSessions: func(n int) {
			rc.sessions(n)
			a.sessions.Store(int64(n))
			a.metrics.setSessions(n)
		},
		OnDisconnect: func(err error) {
			a.metrics.reconnects.Inc()
			a.metrics.dialFailed(err)
		},
		OnDrain: func(*tunnel.Session, time.Duration) {
			rc.drained()
			a.metrics.drains.Inc()
		},
	}
	err := sup.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (a *Agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	// Liveness is the process: a hub outage or a WAN cut must not make
	// the kubelet restart every agent of the fleet (which would only add
	// a reconnect storm when the hub returns). The tunnel is readiness,
	// and backhaul_agent_connected.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Connected() {
			http.Error(w, "no tunnel to the hub", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.cfg.Registry, promhttp.HandlerOpts{}))
	if a.cfg.Profiling {
		profiling.Handle(mux)
	}
	return mux
}

// serveAPI serves HTTP requests to the member's API server with h on the
// streams it is given, until ctx ends.
func (a *Agent) serveAPI(ctx context.Context, wg *sync.WaitGroup, h http.Handler) *streamListener {
	lis := newStreamListener(ctx)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       10 * time.Minute,
		ErrorLog:          a.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lis)
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close(); _ = lis.Close() })
	return lis
}

func (a *Agent) serveStream(ctx context.Context, lis, hubLis *streamListener, in *tunnel.Incoming) {
	req := in.Request
	kind := req.Kind.String()
	switch req.Kind {
	case tunnel.KindAPIServer, tunnel.KindHubAPIServer:
		c, err := in.Accept()
		if err != nil {
			return
		}
		a.metrics.streams.WithLabelValues(kind, tunnel.CodeOK.String()).Inc()
		if req.Kind == tunnel.KindHubAPIServer {
			hubLis.deliver(c)
		} else {
			lis.deliver(c)
		}
	case tunnel.KindTCP:
		a.serveTCP(ctx, in)
	case tunnel.KindAPIServerTCP:
		a.serveAPIServerTCP(ctx, in)
	default:
		a.metrics.streams.WithLabelValues("unknown", tunnel.CodeBadRequest.String()).Inc()
		_ = in.Reject(tunnel.CodeBadRequest, "unknown stream kind")
	}
}

func (a *Agent) serveTCP(ctx context.Context, in *tunnel.Incoming) {
	req := in.Request
	dctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	ap, reason, msg, err := a.cfg.Allow.resolveAllowed(func(h string) ([]netip.Addr, error) { return a.cfg.Resolve(dctx, h) }, req.Address)
	switch {
	case err != nil:
		a.reject(in, tunnel.CodeRefused, fmt.Sprintf("resolve %s: %v", req.Address, err))
	case reason != "":
		a.metrics.refusals.WithLabelValues(reason).Inc()
		a.reject(in, tunnel.CodeNotAllowed, msg)
	default:
		a.dialAndPipe(ctx, dctx, in, ap.String(), "")
	}
}

// serveAPIServerTCP connects the stream to the member API server's TCP
// address; the caller does TLS with it end to end.
func (a *Agent) serveAPIServerTCP(ctx context.Context, in *tunnel.Incoming) {
	dctx, cancel := context.WithTimeout(ctx, in.Request.Timeout)
	defer cancel()
	a.dialAndPipe(ctx, dctx, in, a.api.hostPort(), "agent cannot reach its API server: ")
}

// dialAndPipe dials addr within dctx, answers the stream, and pipes until
// either side ends or ctx does.
func (a *Agent) dialAndPipe(ctx, dctx context.Context, in *tunnel.Incoming, addr, failPrefix string) {
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		a.reject(in, dialCode(err), failPrefix+err.Error())
		return
	}
	stream, err := in.Accept()
	if err != nil {
		_ = conn.Close()
		return
	}
	a.metrics.streams.WithLabelValues(in.Request.Kind.String(), tunnel.CodeOK.String()).Inc()
	tunnel.Pipe(ctx, stream, conn)
}

func (a *Agent) reject(in *tunnel.Incoming, code tunnel.Code, msg string) {
	req := in.Request
	a.metrics.streams.WithLabelValues(req.Kind.String(), code.String()).Inc()
	a.log.Info("refused stream", "kind", req.Kind, "address", req.Address, "request_id", req.RequestID, "code", code, "reason", msg)
	_ = in.Reject(code, msg)
}

func dialCode(err error) tunnel.Code {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return tunnel.CodeTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return tunnel.CodeRefused
	default:
		return tunnel.CodeRefused
	}
}
