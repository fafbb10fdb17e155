package hub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
}

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
	}
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
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "log format: text or json")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "log level: trace, debug, info, warn, error")
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	if o.TLSCertFile == "" || o.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required"))
	}
	if o.AgentTokenFile == "" && o.AgentTokenDir == "" {
		errs = append(errs, errors.New("one of --agent-token-file or --agent-token-dir is required"))
	}
	if o.TokenAuthFile == "" && o.ClientCAFile == "" {
		errs = append(errs, errors.New("one of --token-auth-file or --client-ca-file is required, or no caller could authenticate"))
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

// Config loads files and builds the server configuration.
func (o *Options) Config(log hclog.Logger) (Config, error) {
	cert, err := tls.LoadX509KeyPair(o.TLSCertFile, o.TLSKeyFile)
	if err != nil {
		return Config{}, fmt.Errorf("serving certificate: %w", err)
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
	var authn Union
	if o.ClientCAFile != "" {
		pem, err := os.ReadFile(o.ClientCAFile)
		if err != nil {
			return Config{}, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Config{}, fmt.Errorf("client CA %s: no certificates found", o.ClientCAFile)
		}
		tlsCfg.ClientCAs = pool
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
		authn = append(authn, ClientCerts{})
	}
	if o.TokenAuthFile != "" {
		st, err := LoadStaticTokens(o.TokenAuthFile)
		if err != nil {
			return Config{}, err
		}
		authn = append(authn, st)
	}
	agents, err := NewAgentTokens(o.AgentTokenFile, o.AgentTokenDir)
	if err != nil {
		return Config{}, err
	}
	tcfg := tunnel.DefaultConfig()
	tcfg.KeepAliveInterval, tcfg.KeepAliveTimeout = o.KeepAlive, o.KeepAliveWait
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return Config{
		Listen: o.Listen, TLS: tlsCfg, AdminListen: o.AdminListen, Profiling: o.Profiling,
		ConnectListen: o.ConnectListen, ConnectTLS: o.ConnectTLS, ConnectUDS: o.ConnectUDS,
		ConnectUDSUser: o.ConnectUDSUser, ClusterSuffix: o.ClusterSuffix,
		AgentAuth: agents, Clusters: agents, Authn: authn, Authz: AllowAuthenticated{},
		Tunnel: tcfg, DialTimeout: o.DialTimeout, ShutdownTimeout: o.ShutdownTimeout,
		Log: log, Registry: reg,
	}, nil
}
