package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Config loads files and builds the server configuration. With
// --registry=kube it also connects to the host cluster and makes sure the
// CA, the serving certificate and the hub-info ConfigMap exist.
func (o *Options) Config(ctx context.Context, log hclog.Logger) (Config, error) {
	cfg := Config{
		Listen: o.Listen, AdminListen: o.AdminListen, Profiling: o.Profiling,
		ConnectListen: o.ConnectListen, ConnectTLS: o.ConnectTLS, ConnectUDS: o.ConnectUDS,
		ConnectInsecureCredentials: o.ConnectInsecureCredentials,
		ConnectUDSUser:             o.ConnectUDSUser, ClusterSuffix: o.ClusterSuffix,
		DialTimeout: o.DialTimeout, ShutdownGrace: o.ShutdownGrace, ShutdownDelay: o.ShutdownDelay,
		Replica: o.ReplicaName, MaxHandshakes: o.MaxHandshakes, ProbeInterval: o.StatusInterval,
		Authz: auth.AllowAuthenticated{}, Tunnel: o.tunnelConfig(), Log: log, Metrics: prometheus.NewRegistry(),
	}
	cfg.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.SessionMaxAge = o.SessionMaxAge
	cfg.TunnelHealth = o.TunnelHealth.config()
	cfg.ConnectSocketDir = o.ConnectSocketDir
	cfg.Recording = recording.DefaultConfig()
	cfg.Recording.Mode, cfg.Recording.Dir, cfg.Recording.Stdin = o.Recording, o.RecordingDir, o.RecordingStdin
	cfg.Audit = o.Audit
	cfg.Mapping = auth.Mapping{UserPrefix: o.MemberUserPrefix, SystemUserPrefix: o.MemberSystemUserPrefix, GroupPrefix: o.MemberGroupPrefix}
	var err error
	if cfg.Limits, err = o.limits(log); err != nil {
		return Config{}, err
	}
	if cfg.TLS, err = o.servingTLS(&cfg); err != nil {
		return Config{}, err
	}
	callers, clientCAs, err := o.callers()
	if err != nil {
		return Config{}, err
	}
	agents, err := o.staticAgents(&cfg)
	if err != nil {
		return Config{}, err
	}
	if o.Registry == RegistryKube {
		if cfg.Host, err = o.host(ctx, log, cfg.TLS); err != nil {
			return Config{}, err
		}
		// Certificates first: the registry decides which cluster they
		// name. Static tokens, if configured too, remain for standalone
		// agents.
		agents = append(auth.AgentAuthChain{&auth.AgentCerts{Roots: cfg.Host.CA.Pool, Clusters: cfg.Host.Clusters}}, agents...)
		cfg.Clusters = cfg.Host.Clusters
		if callers, cfg.Authz, err = o.hostReviews(cfg.Host.Host, callers, cfg.Metrics); err != nil {
			return Config{}, err
		}
	}
	if len(agents) == 0 {
		return Config{}, errors.New("no way for agents to authenticate: set --registry=kube or an agent token source")
	}
	// Requested, not verified here: the authenticators verify a
	// certificate against what they trust (client CAs for callers, the
	// hub CA for agents), so a stray certificate next to a good token
	// does not fail the handshake.
	var hubCAs func() []*x509.Certificate
	if cfg.Host != nil {
		hubCAs = cfg.Host.CA.Certs
	}
	o.requestClientCerts(&cfg, callers, clientCAs, hubCAs)
	if cfg.Host != nil {
		cfg.Reloaders = append(cfg.Reloaders, o.caReload(&cfg))
	}
	cfg.AgentAuth, cfg.Authn = agents, callers
	return cfg, nil
}

func (o *Options) tunnelConfig() *tunnel.Config {
	t := tunnel.DefaultConfig()
	t.KeepAliveInterval, t.KeepAliveTimeout = o.KeepAlive, o.KeepAliveWait
	t.StreamWindow = uint32(o.StreamWindow)
	return t
}

// limits are the stream limits, with a memory budget when a memory limit
// is known (--memory-limit, GOMEMLIMIT or the cgroup's).
func (o *Options) limits(log hclog.Logger) (frontend.LimitsConfig, error) {
	l := frontend.DefaultLimitsConfig()
	l.PerCaller, l.PerCluster = o.MaxStreamsPerCaller, o.MaxStreamsPerCluster
	flag, err := frontend.ParseMemoryLimit(o.MemoryLimit)
	if err != nil {
		return l, err
	}
	limit, source := frontend.DetectMemoryLimit(flag)
	if limit == 0 || o.MemoryBudget == 0 {
		log.Info("no memory budget for new streams", "memory_limit", limit, "memory_budget", o.MemoryBudget)
		return l, nil
	}
	if l.Memory, err = frontend.NewMemoryBudget(limit, o.MemoryBudget, source); err != nil {
		return l, err
	}
	log.Info("new streams refused above the memory budget", "memory_limit", limit, "source", source, "budget_bytes", l.Memory.RefuseAbove())
	return l, nil
}

// callers are the caller authenticators from files, and the CAs of caller
// certificates.
func (o *Options) callers() (auth.Union, []*x509.Certificate, error) {
	var authn auth.Union
	var cas []*x509.Certificate
	if o.ClientCAFile != "" {
		var err error
		if cas, err = certutil.CertsFromFile(o.ClientCAFile); err != nil {
			return nil, nil, fmt.Errorf("client CA: %w", err)
		}
		authn = append(authn, auth.NewClientCerts(cas...))
	}
	if o.TokenAuthFile != "" {
		st, err := auth.LoadStaticTokens(o.TokenAuthFile)
		if err != nil {
			return nil, nil, err
		}
		authn = append(authn, st)
	}
	return authn, cas, nil
}

// staticAgents authenticates agents by per-cluster tokens from files,
// which then also say which clusters exist.
func (o *Options) staticAgents(cfg *Config) (auth.AgentAuthChain, error) {
	if o.AgentTokenFile == "" && o.AgentTokenDir == "" {
		return nil, nil
	}
	tokens, err := auth.NewAgentTokens(o.AgentTokenFile, o.AgentTokenDir)
	if err != nil {
		return nil, err
	}
	cfg.Clusters = tokens
	return auth.AgentAuthChain{tokens}, nil
}

// hostReviews adds TokenReview to callers and returns the authorizer:
// SubjectAccessReview unless --authorization-mode=AlwaysAllow.
func (o *Options) hostReviews(h *fleet.Host, callers auth.Union, reg prometheus.Registerer) (auth.Union, auth.Authorizer, error) {
	m := auth.NewReviewMetrics(reg)
	if o.TokenReview {
		tr, err := auth.NewTokenReviewer(h.Kube, nil, o.cacheConfig(auth.DefaultTokenReviewConfig(), m))
		if err != nil {
			return nil, nil, err
		}
		callers = append(callers, tr)
	}
	if o.AuthorizationMode == AuthzAlwaysAllow {
		return callers, auth.AllowAuthenticated{}, nil
	}
	sar, err := auth.NewSubjectAccessReviewer(h.Kube, o.cacheConfig(auth.DefaultAccessReviewConfig(), m))
	if err != nil {
		return nil, nil, err
	}
	return callers, sar, nil
}

// cacheConfig applies --auth-cache-ttl to allowed answers; denials keep
// their shorter default so a new grant takes effect quickly.
func (o *Options) cacheConfig(c auth.CacheConfig, m *auth.ReviewMetrics) auth.CacheConfig {
	c.SuccessTTL = o.AuthCacheTTL
	c.FailureTTL = min(c.FailureTTL, o.AuthCacheTTL)
	c.Metrics = m
	return c
}

// host connects to the host cluster and sets up what lives there: the
// Cluster informer, the CA, the serving certificate unless it came from
// files (into tlsCfg), and the hub-info ConfigMap.
func (o *Options) host(ctx context.Context, log hclog.Logger, tlsCfg *tls.Config) (*HostConfig, error) {
	rc, err := o.hostRESTConfig()
	if err != nil {
		return nil, err
	}
	h, err := fleet.NewHost(rc, o.Namespace, o.PeersService, log)
	if err != nil {
		return nil, err
	}
	hc := &HostConfig{
		Host: h, AgentCertValidity: o.AgentCertValidity, Heartbeat: o.Heartbeat,
		LeaderElect: o.LeaderElect, PeerListen: o.PeerListen, PeersService: o.PeersService,
	}
	// Every replica checks tokens against its own cache of them: a guess
	// costs the host API nothing.
	tc, err := enrollment.NewTokenCache(h.Kube, o.Namespace)
	if err != nil {
		return nil, err
	}
	if err := h.Manager.Add(tc); err != nil {
		return nil, err
	}
	hc.Tokens = &enrollment.BootstrapTokens{Secrets: tc, Writer: h.Direct, Namespace: o.Namespace}
	hc.EnrollLimits = o.EnrollLimits
	if o.Propagation {
		hc.Propagation = &propagation.Options{Log: log.Named(logging.Propagation), Workers: o.PropagationWorkers, Resync: o.PropagationResync,
			MaxWatchedCopies: o.PropagationMaxWatchedCopies}
	}
	if hc.Clusters, err = fleet.NewClusters(ctx, h.Manager.GetCache(), log.Named(logging.Registry)); err != nil {
		return nil, err
	}
	if hc.CA, err = o.ca(ctx, h); err != nil {
		return nil, err
	}
	servingCA, err := o.servingCert(ctx, h, hc.CA, tlsCfg)
	if err != nil {
		return nil, err
	}
	if o.AdvertiseURL != "" {
		if err := enrollment.PublishHubInfo(ctx, h.Direct, o.Namespace, o.AdvertiseURL, servingCA); err != nil {
			return nil, err
		}
	}
	return hc, nil
}

// ca is the agent CA: from files, else from its Secret (created on first
// start).
func (o *Options) ca(ctx context.Context, h *fleet.Host) (*enrollment.CA, error) {
	if o.CACertFile != "" {
		ca, err := enrollment.LoadCAFiles(o.CACertFile, o.CAKeyFile)
		if err != nil {
			return nil, fmt.Errorf("agent CA: %w", err)
		}
		return ca, nil
	}
	return enrollment.EnsureCA(ctx, h.Direct, o.Namespace, enrollment.CASecretName)
}

// servingCert issues the serving certificate into tlsCfg when no file
// gave one, and returns the CA callers and agents should trust for it.
func (o *Options) servingCert(ctx context.Context, h *fleet.Host, ca *enrollment.CA, tlsCfg *tls.Config) ([]byte, error) {
	if cert := currentCert(tlsCfg); cert != nil {
		// A serving certificate from files: publish the agent CA if it
		// signed it, else the chain's last certificate, the closest to a
		// root the hub knows.
		chain := cert.Certificate
		if leaf, err := x509.ParseCertificate(chain[0]); err != nil || !verifies(leaf, ca.Pool()) {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[len(chain)-1]}), nil
		}
		return ca.PEM(), nil
	}
	var extra []string
	if o.TLSSANs != "" {
		extra = strings.Split(o.TLSSANs, ",")
	}
	if u, err := url.Parse(o.AdvertiseURL); err == nil && u.Hostname() != "" {
		extra = append(extra, u.Hostname())
	}
	cert, err := enrollment.EnsureServingCert(ctx, h.Direct, o.Namespace, enrollment.ServingSecretName, ca, enrollment.ServingHosts(o.Namespace, extra))
	if err != nil {
		return nil, err
	}
	tlsCfg.Certificates = []tls.Certificate{cert}
	return ca.PEM(), nil
}

func (o *Options) hostRESTConfig() (*rest.Config, error) {
	if o.Kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("host kubeconfig: %w", err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("host cluster: no --kubeconfig and not in a pod: %w", err)
	}
	return rc, nil
}

func verifies(c *x509.Certificate, roots *x509.CertPool) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots})
	return err == nil
}
