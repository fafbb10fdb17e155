package hub

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"backhaul.io/backhaul/hub/audit"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/hub/fleet"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/hub/session"
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
	// ConnectInsecureCredentials accepts bearer tokens on a plaintext
	// ConnectListen (see frontend.ConnectConfig.InsecureCredentials).
	ConnectInsecureCredentials bool
	// ConnectUDS, when set, serves the CONNECT front end on a Unix socket
	// whose callers all act as ConnectUDSUser (the socket's permissions
	// are the authentication, as for a kube-apiserver egress selector).
	ConnectUDS     string
	ConnectUDSUser string
	// ConnectSocketDir, when set, serves the CONNECT front end on one Unix
	// socket per cluster, DIR/CLUSTER.sock, whose callers act as
	// ConnectUDSUser and whose node addresses are that cluster's
	// (frontend.ClusterSockets). Clusters must list its clusters.
	ConnectSocketDir string
	// ClusterSuffix marks a cluster name in a CONNECT target (default
	// frontend.DefaultClusterSuffix).
	ClusterSuffix string

	// AgentAuth decides which cluster an agent serves; Clusters says which
	// clusters are registered; Authn and Authz are for callers.
	AgentAuth session.AgentAuthenticator
	Clusters  auth.Clusters
	Authn     auth.Authenticator
	Authz     auth.Authorizer
	// Mapping turns callers' host identities into members' (zero:
	// auth.DefaultMapping).
	Mapping auth.Mapping

	// Host, when set (--registry=kube), is the host cluster that holds
	// Cluster objects: the hub then serves enrollment, revokes removed
	// clusters' sessions, writes Cluster status and runs its controllers.
	Host *HostConfig

	// Replica names this replica to agents, peers and in status.
	Replica string
	// MaxHandshakes bounds agent upgrades in progress (reconnect storms).
	MaxHandshakes int
	// ProbeInterval is how often each held cluster is probed in the
	// background (round trip, /readyz).
	ProbeInterval time.Duration
	// TunnelHealth is how each cluster's tunnel health is measured and
	// reported (zero: DefaultTunnelHealthConfig).
	TunnelHealth TunnelHealthConfig
	// SessionMaxAge, when positive, ends agent sessions after at most
	// this long (see session.EndpointConfig.MaxAge); sessions of
	// certificates end at the certificate's expiry in any case.
	SessionMaxAge time.Duration
	// Reloaders keep certificates read from files current while Run runs.
	Reloaders []Reloader
	// caNamesChanged, when set, recomputes the CAs the TLS handshake names
	// (a CA bundle changed).
	caNamesChanged func()

	Tunnel      *tunnel.Config
	DialTimeout time.Duration
	// Limits bound the streams callers hold through the gateway and
	// CONNECT, and refuse new ones above the memory budget (Limits.Memory);
	// New fills in Metrics and Log. The zero value limits nothing.
	Limits frontend.LimitsConfig
	// Recording records exec and attach sessions through the gateway
	// (off unless Recording.Mode says otherwise); New fills in Metrics
	// and Log.
	Recording recording.Config
	// ShutdownGrace is the most, and ShutdownDelay the least, this replica
	// keeps serving after it is told to stop, while its agents move away.
	ShutdownGrace time.Duration
	ShutdownDelay time.Duration
	// Audit is the audit log of callers' requests (off unless Path is set).
	Audit audit.Config

	Log     hclog.Logger
	Metrics *prometheus.Registry
}

// HostConfig is the host cluster and what the hub keeps there.
type HostConfig struct {
	*fleet.Host
	Clusters          *fleet.Clusters
	CA                *enrollment.CA
	AgentCertValidity time.Duration
	Heartbeat         time.Duration

	// Tokens checks and redeems bootstrap tokens, read from a cache of the
	// host's token Secrets; EnrollLimits bound who may try them how often.
	Tokens       *enrollment.BootstrapTokens
	EnrollLimits enrollment.Limits
	// LeaderElect makes replicas elect the one that does singleton work;
	// without it this replica does it.
	LeaderElect bool
	// PeerListen, when set, is where other replicas connect to forward
	// streams; PeersService names the headless Service that lists them.
	PeerListen   string
	PeersService string
	// Propagation, when set, runs the Propagation controller.
	Propagation *propagation.Options
}

// DefaultConfig is a Config with every setting that has a sensible
// default filled in; listeners, TLS, authentication, Log and Metrics are
// the caller's.
func DefaultConfig() Config {
	return Config{
		ClusterSuffix: frontend.DefaultClusterSuffix,
		Replica:       hostname(),
		MaxHandshakes: 128,
		ProbeInterval: 15 * time.Second,
		TunnelHealth:  DefaultTunnelHealthConfig(),
		Tunnel:        tunnel.DefaultConfig(),
		DialTimeout:   10 * time.Second,
		Limits:        frontend.DefaultLimitsConfig(),
		Recording:     recording.DefaultConfig(),
		ShutdownGrace: 20 * time.Second,
		ShutdownDelay: 3 * time.Second,
		Audit:         audit.DefaultConfig(),
	}
}

func (c *Config) validate() error {
	if c.TLS == nil || c.AgentAuth == nil || c.Clusters == nil || c.Authn == nil || c.Authz == nil || c.Log == nil || c.Metrics == nil || c.Tunnel == nil {
		return errors.New("hub config: TLS, AgentAuth, Clusters, Authn, Authz, Tunnel, Log and Metrics are required")
	}
	if c.Replica == "" || c.MaxHandshakes < 1 || c.ProbeInterval <= 0 || c.ShutdownGrace <= 0 {
		return errors.New("hub config: Replica, MaxHandshakes, ProbeInterval and ShutdownGrace are required")
	}
	if _, ok := c.Clusters.(frontend.ClusterNames); c.ConnectSocketDir != "" && !ok {
		return errors.New("hub config: ConnectSocketDir needs a cluster registry that lists its clusters")
	}
	if h := c.Host; h != nil && (h.Host == nil || h.Clusters == nil || h.CA == nil) {
		return errors.New("hub config: Host needs the host connection, Clusters and CA")
	}
	return nil
}
