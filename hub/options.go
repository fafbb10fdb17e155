package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"

	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Options are backhaul-hub's command-line settings.
type Options struct {
	Listen          string
	AdminListen     string
	Profiling       bool
	ConnectListen   string
	ConnectTLS      bool
	ConnectUDS      string
	ConnectUDSUser  string
	ClusterSuffix   string
	TLSCertFile     string
	TLSKeyFile      string
	ClientCAFile    string
	TokenAuthFile   string
	AgentTokenFile  string
	AgentTokenDir   string
	DialTimeout     time.Duration
	KeepAlive       time.Duration
	KeepAliveWait   time.Duration
	ShutdownTimeout time.Duration
	Log             logging.Options

	// Host-cluster registry (--registry=kube).
	Registry          string
	Kubeconfig        string
	Namespace         string
	CACertFile        string
	CAKeyFile         string
	AgentCertValidity time.Duration
	AdvertiseURL      string
	TLSSANs           string
	TokenReview       bool
	AuthorizationMode string
	AuthCacheTTL      time.Duration
	StatusInterval    time.Duration
	Heartbeat         time.Duration
	ReplicaName       string
	LeaderElect       bool
	// Propagation controller (--registry=kube); wired by main.
	Propagation        bool
	PropagationWorkers int
	PropagationResync  time.Duration
}

// Registry kinds and authorization modes.
const (
	RegistryStatic = "static"
	RegistryKube   = "kube"

	AuthzAlwaysAllow         = "AlwaysAllow"
	AuthzSubjectAccessReview = "SubjectAccessReview"
)

// NewOptions returns the defaults.
func NewOptions() *Options {
	t := tunnel.DefaultConfig()
	return &Options{
		Listen:          ":8443",
		DialTimeout:     10 * time.Second,
		KeepAlive:       t.KeepAliveInterval,
		KeepAliveWait:   t.KeepAliveTimeout,
		ShutdownTimeout: 10 * time.Second,
		ConnectUDSUser:  "system:backhaul:uds",
		ClusterSuffix:   DefaultClusterSuffix,
		Log:             logging.Options{Name: "backhaul-hub", Format: "text", Level: "info"},

		Registry:          RegistryStatic,
		Namespace:         "backhaul-system",
		AgentCertValidity: 30 * 24 * time.Hour,
		TokenReview:       true,
		AuthCacheTTL:      10 * time.Second,
		StatusInterval:    15 * time.Second,
		Heartbeat:         time.Minute,
		ReplicaName:       hostname(),

		LeaderElect:        true,
		Propagation:        true,
		PropagationWorkers: 8,
		PropagationResync:  time.Minute,
	}
}

func hostname() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "TLS address for agents (/v1/tunnel) and gateway callers (/clusters/NAME/...)")
	fs.StringVar(&o.AdminListen, "admin-listen", o.AdminListen, "plain-HTTP address for /healthz, /readyz and /metrics (empty: only on the TLS listener)")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "serve /debug/pprof/ on --admin-listen")
	fs.StringVar(&o.ConnectListen, "connect-listen", o.ConnectListen, "TCP address of the HTTP CONNECT front end (empty: off); targets are CLUSTER<suffix>:PORT")
	fs.BoolVar(&o.ConnectTLS, "connect-tls", o.ConnectTLS, "serve --connect-listen in TLS with the serving certificate, accepting client certificates from --client-ca-file")
	fs.StringVar(&o.ConnectUDS, "connect-uds", o.ConnectUDS, "Unix socket path of the CONNECT front end (empty: off); callers are trusted by the socket's file permissions")
	fs.StringVar(&o.ConnectUDSUser, "connect-uds-user", o.ConnectUDSUser, "identity given to callers on --connect-uds")
	fs.StringVar(&o.ClusterSuffix, "cluster-suffix", o.ClusterSuffix, "host suffix that marks a cluster name in a CONNECT target")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "PEM serving certificate (chain)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "PEM key of the serving certificate")
	fs.StringVar(&o.ClientCAFile, "client-ca-file", o.ClientCAFile, "PEM CA bundle; callers presenting a certificate it signed authenticate as CN (user) and O (groups)")
	fs.StringVar(&o.TokenAuthFile, "token-auth-file", o.TokenAuthFile, "caller bearer tokens, kube-apiserver format: token,user,uid[,\"group1,group2\"]")
	fs.StringVar(&o.AgentTokenFile, "agent-token-file", o.AgentTokenFile, "agent tokens as CSV lines token,cluster (re-read on change)")
	fs.StringVar(&o.AgentTokenDir, "agent-token-dir", o.AgentTokenDir, "directory with one file per cluster holding its agent token, e.g. a mounted Secret (re-read on change)")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", o.DialTimeout, "how long an agent may take to reach its API server for one stream")
	fs.DurationVar(&o.KeepAlive, "keepalive-interval", o.KeepAlive, "tunnel ping interval; keep below load-balancer idle timeouts")
	fs.DurationVar(&o.KeepAliveWait, "keepalive-timeout", o.KeepAliveWait, "how long a ping may go unanswered before the session is dropped")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long to drain requests on SIGTERM")
	fs.StringVar(&o.Registry, "registry", o.Registry, "where clusters are registered: static (--agent-token-file/--agent-token-dir) or kube (Cluster objects in the host cluster, with enrollment, agent certificates and Cluster status)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the host cluster for --registry=kube (empty: in-cluster service account)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "host-cluster namespace of the hub's Secrets (CA, serving certificate, bootstrap tokens) and ConfigMaps")
	fs.StringVar(&o.CACertFile, "ca-cert-file", o.CACertFile, "PEM CA certificate that signs agent certificates (empty with --registry=kube: Secret backhaul-ca in --namespace, created on first start)")
	fs.StringVar(&o.CAKeyFile, "ca-key-file", o.CAKeyFile, "PEM key of --ca-cert-file")
	fs.DurationVar(&o.AgentCertValidity, "agent-cert-validity", o.AgentCertValidity, "lifetime of issued agent certificates; agents renew at two thirds")
	fs.StringVar(&o.AdvertiseURL, "advertise-url", o.AdvertiseURL, "wss:// URL agents dial, published in ConfigMap backhaul-hub-info for backhaulctl's onboarding command")
	fs.StringVar(&o.TLSSANs, "tls-san", o.TLSSANs, "comma-separated extra DNS names or IPs for the serving certificate the hub issues itself (--registry=kube without --tls-cert-file)")
	fs.BoolVar(&o.TokenReview, "token-review", o.TokenReview, "with --registry=kube, authenticate callers' bearer tokens by TokenReview against the host cluster")
	fs.StringVar(&o.AuthorizationMode, "authorization-mode", o.AuthorizationMode, "AlwaysAllow or SubjectAccessReview (get clusters/proxy in backhaul.io, by cluster name, against the host cluster); empty: SubjectAccessReview with --registry=kube, else AlwaysAllow")
	fs.DurationVar(&o.AuthCacheTTL, "auth-cache-ttl", o.AuthCacheTTL, "how long TokenReview and SubjectAccessReview answers are cached")
	fs.DurationVar(&o.StatusInterval, "cluster-status-interval", o.StatusInterval, "how often the hub probes each connected member's /readyz through the tunnel")
	fs.DurationVar(&o.Heartbeat, "cluster-heartbeat-interval", o.Heartbeat, "how often Cluster status is written when nothing changed")
	fs.StringVar(&o.ReplicaName, "replica-name", o.ReplicaName, "this hub replica's name in Cluster status (default: $POD_NAME or the host name)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "with --registry=kube, replicas compete for Lease backhaul-hub in --namespace: the leader serves, the others stand by (not ready) and take over when it goes")
	fs.BoolVar(&o.Propagation, "propagation", o.Propagation, "with --registry=kube, run the Propagation controller, which pushes objects to members through their tunnels")
	fs.IntVar(&o.PropagationWorkers, "propagation-workers", o.PropagationWorkers, "Propagations reconciled at once")
	fs.DurationVar(&o.PropagationResync, "propagation-resync", o.PropagationResync, "how often every Propagation is re-applied, reverting drift in members")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "log format: text or json")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "log level: trace, debug, info, warn, error")
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	kube := o.Registry == RegistryKube
	switch o.Registry {
	case RegistryStatic, RegistryKube:
	default:
		errs = append(errs, fmt.Errorf("--registry %q: want static or kube", o.Registry))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") || (!kube && o.TLSCertFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (with --registry=kube the hub can issue its own)"))
	}
	if (o.CACertFile == "") != (o.CAKeyFile == "") {
		errs = append(errs, errors.New("--ca-cert-file and --ca-key-file go together"))
	}
	if !kube && o.AgentTokenFile == "" && o.AgentTokenDir == "" {
		errs = append(errs, errors.New("one of --agent-token-file or --agent-token-dir is required with --registry=static"))
	}
	if o.TokenAuthFile == "" && o.ClientCAFile == "" && !(kube && o.TokenReview) {
		errs = append(errs, errors.New("one of --token-auth-file, --client-ca-file or --registry=kube with --token-review is required, or no caller could authenticate"))
	}
	switch o.AuthorizationMode {
	case "", AuthzAlwaysAllow:
	case AuthzSubjectAccessReview:
		if !kube {
			errs = append(errs, errors.New("--authorization-mode=SubjectAccessReview needs --registry=kube"))
		}
	default:
		errs = append(errs, fmt.Errorf("--authorization-mode %q: want AlwaysAllow or SubjectAccessReview", o.AuthorizationMode))
	}
	if o.AgentCertValidity < time.Minute || o.StatusInterval <= 0 || o.Heartbeat <= 0 || o.AuthCacheTTL < 0 {
		errs = append(errs, errors.New("--agent-cert-validity must be at least 1m; status intervals positive; --auth-cache-ttl not negative"))
	}
	if o.AdvertiseURL != "" {
		if u, err := url.Parse(o.AdvertiseURL); err != nil || u.Scheme != "wss" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--advertise-url %q: want wss://host[:port]", o.AdvertiseURL))
		}
	}
	if o.DialTimeout <= 0 || o.KeepAlive <= 0 || o.KeepAliveWait <= 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	if !strings.HasPrefix(o.ClusterSuffix, ".") || len(o.ClusterSuffix) < 2 {
		errs = append(errs, fmt.Errorf("--cluster-suffix %q must start with a dot", o.ClusterSuffix))
	}
	if o.ConnectUDS != "" && o.ConnectUDSUser == "" {
		errs = append(errs, errors.New("--connect-uds-user must name an identity"))
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Config loads files and builds the server configuration. With
// --registry=kube it also connects to the host cluster and makes sure the
// CA, the serving certificate and the hub-info ConfigMap exist.
func (o *Options) Config(ctx context.Context, log hclog.Logger) (Config, error) {
	cfg := Config{
		Listen: o.Listen, AdminListen: o.AdminListen, Profiling: o.Profiling,
		ConnectListen: o.ConnectListen, ConnectTLS: o.ConnectTLS, ConnectUDS: o.ConnectUDS,
		ConnectUDSUser: o.ConnectUDSUser, ClusterSuffix: o.ClusterSuffix,
		DialTimeout: o.DialTimeout, ShutdownTimeout: o.ShutdownTimeout,
		AgentCertValidity: o.AgentCertValidity, StatusInterval: o.StatusInterval,
		Heartbeat: o.Heartbeat, ReplicaName: o.ReplicaName, PodName: os.Getenv("POD_NAME"), Log: log,
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	clientCAs := x509.NewCertPool()
	var authn Union
	if o.ClientCAFile != "" {
		cas, err := certutil.CertsFromFile(o.ClientCAFile)
		if err != nil {
			return Config{}, fmt.Errorf("client CA: %w", err)
		}
		for _, ca := range cas {
			clientCAs.AddCert(ca)
		}
		authn = append(authn, ClientCerts{CAs: cas})
	}
	if o.TokenAuthFile != "" {
		st, err := LoadStaticTokens(o.TokenAuthFile)
		if err != nil {
			return Config{}, err
		}
		authn = append(authn, st)
	}
	var agents AgentAuthChain
	if o.AgentTokenFile != "" || o.AgentTokenDir != "" {
		tokens, err := NewAgentTokens(o.AgentTokenFile, o.AgentTokenDir)
		if err != nil {
			return Config{}, err
		}
		agents = append(agents, tokens)
		cfg.Clusters = tokens
	}
	var authz Authorizer = AllowAuthenticated{}
	if o.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("serving certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if o.CACertFile != "" {
		ca, err := LoadCAFiles(o.CACertFile, o.CAKeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("agent CA: %w", err)
		}
		cfg.CA = ca
	}
	if o.Registry == RegistryKube {
		if err := o.hostConfig(ctx, log, &cfg, tlsCfg); err != nil {
			return Config{}, err
		}
		// Certificates first: the registry decides which cluster they
		// name. Static tokens, if configured too, remain for standalone
		// agents.
		agents = append(AgentAuthChain{&AgentCerts{CA: cfg.CA, Clusters: cfg.HostClusters}}, agents...)
		cfg.Clusters = cfg.HostClusters
		clientCAs.AddCert(cfg.CA.Cert)
		m := NewHostAuthMetrics(reg)
		if o.TokenReview {
			tr, err := NewTokenReviewer(cfg.Host.Kube, nil, o.cacheConfig(DefaultTokenReviewConfig(), m))
			if err != nil {
				return Config{}, err
			}
			authn = append(authn, tr)
		}
		if o.AuthorizationMode != AuthzAlwaysAllow {
			sar, err := NewSubjectAccessReviewer(cfg.Host.Kube, o.cacheConfig(DefaultAccessReviewConfig(), m))
			if err != nil {
				return Config{}, err
			}
			authz = sar
		}
	}
	if len(agents) == 0 {
		return Config{}, errors.New("no way for agents to authenticate: set --registry=kube or an agent token source")
	}
	if len(clientCAs.Subjects()) > 0 { //nolint:staticcheck // only used to test emptiness
		tlsCfg.ClientCAs = clientCAs
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	tcfg := tunnel.DefaultConfig()
	tcfg.KeepAliveInterval, tcfg.KeepAliveTimeout = o.KeepAlive, o.KeepAliveWait
	cfg.TLS, cfg.AgentAuth, cfg.Authn, cfg.Authz, cfg.Tunnel, cfg.Registry = tlsCfg, agents, authn, authz, tcfg, reg
	return cfg, nil
}

// hostConfig connects to the host cluster and fills in what lives there.
func (o *Options) hostConfig(ctx context.Context, log hclog.Logger, cfg *Config, tlsCfg *tls.Config) error {
	rc, err := o.hostRESTConfig()
	if err != nil {
		return err
	}
	host, err := NewHost(rc, o.Namespace, o.LeaderElect, log)
	if err != nil {
		return err
	}
	cfg.Host = host
	if cfg.HostClusters, err = NewHostClusters(ctx, host.Manager.GetCache(), log.Named(logging.Registry)); err != nil {
		return err
	}
	if cfg.CA == nil {
		if cfg.CA, err = EnsureCA(ctx, host.Direct, o.Namespace, CASecretName); err != nil {
			return err
		}
	}
	servingCA := cfg.CA.PEM
	if len(tlsCfg.Certificates) == 0 {
		var extra []string
		if o.TLSSANs != "" {
			extra = strings.Split(o.TLSSANs, ",")
		}
		if u, err := url.Parse(o.AdvertiseURL); err == nil && u.Hostname() != "" {
			extra = append(extra, u.Hostname())
		}
		cert, err := EnsureServingCert(ctx, host.Direct, o.Namespace, ServingSecretName, cfg.CA, servingHosts(o.Namespace, extra))
		if err != nil {
			return err
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	} else if chain := tlsCfg.Certificates[0].Certificate; len(chain) > 0 {
		// A serving certificate from files: publish the agent CA if it
		// signed it, else the chain's last certificate, the closest to a
		// root the hub knows.
		if leaf, err := x509.ParseCertificate(chain[0]); err != nil || !verifies(leaf, cfg.CA.Pool) {
			servingCA = pemCert(chain[len(chain)-1])
		}
	}
	if o.AdvertiseURL != "" {
		if err := PublishHubInfo(ctx, host.Direct, o.Namespace, o.AdvertiseURL, servingCA); err != nil {
			return err
		}
	}
	return nil
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

// cacheConfig applies --auth-cache-ttl to allowed answers; denials keep
// their shorter default so a new grant takes effect quickly.
func (o *Options) cacheConfig(c CacheConfig, m *HostAuthMetrics) CacheConfig {
	c.SuccessTTL = o.AuthCacheTTL
	c.FailureTTL = min(c.FailureTTL, o.AuthCacheTTL)
	c.Metrics = m
	return c
}

func verifies(c *x509.Certificate, roots *x509.CertPool) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots})
	return err == nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
