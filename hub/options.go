package hub

import (
	"flag"
	"os"
	"time"

	"backhaul.io/backhaul/hub/audit"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Options are backhaul-hub's command-line settings.
type Options struct {
	Listen        string
	AdminListen   string
	Profiling     bool
	ConnectListen string
	ConnectTLS    bool
	// ConnectInsecureCredentials: see Config.
	ConnectInsecureCredentials bool
	ConnectUDS                 string
	ConnectUDSUser             string
	ConnectSocketDir           string
	ClusterSuffix              string
	TLSCertFile                string
	TLSKeyFile                 string
	ClientCAFile               string
	TokenAuthFile              string
	AgentTokenFile             string
	AgentTokenDir              string
	DialTimeout                time.Duration
	KeepAlive                  time.Duration
	KeepAliveWait              time.Duration
	ShutdownGrace              time.Duration
	ShutdownDelay              time.Duration
	MaxHandshakes              int
	SessionMaxAge              time.Duration
	Log                        logging.Options
	// certReloadEvery overrides reloadEvery (tests).
	certReloadEvery time.Duration
	// Memory bounds (issue 14, item 4): see Config.
	StreamWindow         tunnel.Window
	MaxStreamsPerCaller  int
	MaxStreamsPerCluster int
	MemoryLimit          string
	MemoryBudget         float64

	// EnrollLimits bound /v1/enroll and /v1/enroll/status.
	EnrollLimits enrollment.Limits
	// Audit is the audit log of callers' requests.
	Audit audit.Config

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
	// Identity mapping into members (auth.Mapping).
	MemberUserPrefix       string
	MemberSystemUserPrefix string
	MemberGroupPrefix      string
	StatusInterval         time.Duration
	Heartbeat              time.Duration
	ReplicaName            string
	LeaderElect            bool
	PeerListen             string
	PeersService           string
	// TunnelHealth: per-cluster tunnel health (status.tunnel, metrics).
	TunnelHealth TunnelHealthOptions
	// Propagation controller (--registry=kube).
	Propagation        bool
	PropagationWorkers int
	PropagationResync  time.Duration
	// PropagationMaxWatchedCopies bounds the labelled objects of one kind
	// the controller watches in one member.
	PropagationMaxWatchedCopies int
	// Session recording (hub/recording): see Config.Recording.
	Recording      recording.Mode
	RecordingDir   string
	RecordingStdin bool
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
		Listen:         ":8443",
		AdminListen:    ":9090",
		SessionMaxAge:  24 * time.Hour,
		DialTimeout:    10 * time.Second,
		KeepAlive:      t.KeepAliveInterval,
		KeepAliveWait:  t.KeepAliveTimeout,
		ShutdownGrace:  20 * time.Second,
		ShutdownDelay:  3 * time.Second,
		MaxHandshakes:  128,
		ConnectUDSUser: "system:backhaul:uds",
		ClusterSuffix:  frontend.DefaultClusterSuffix,
		Log:            logging.Options{Name: "backhaul-hub", Format: "text", Level: "info"},

		StreamWindow:         tunnel.Window(t.StreamWindow),
		MaxStreamsPerCaller:  frontend.DefaultMaxStreamsPerCaller,
		MaxStreamsPerCluster: frontend.DefaultMaxStreamsPerCluster,
		MemoryBudget:         frontend.DefaultMemoryBudget,

		EnrollLimits: enrollment.DefaultLimits(),
		Audit:        audit.DefaultConfig(),

		Registry:               RegistryStatic,
		Namespace:              identity.DefaultNamespace,
		AgentCertValidity:      30 * 24 * time.Hour,
		TokenReview:            true,
		AuthCacheTTL:           10 * time.Second,
		MemberSystemUserPrefix: auth.DefaultMapping().SystemUserPrefix,
		StatusInterval:         15 * time.Second,
		Heartbeat:              time.Minute,
		TunnelHealth:           defaultTunnelHealthOptions(),
		ReplicaName:            hostname(),
		PeersService:           "backhaul-hub-peers",

		LeaderElect:        true,
		Propagation:        true,
		PropagationWorkers: 8,
		PropagationResync:  30 * time.Minute,

		PropagationMaxWatchedCopies: 100_000,

		Recording: recording.Off,
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
	fs.StringVar(&o.AdminListen, "metrics-listen", o.AdminListen, "plain-HTTP address for /metrics, /healthz and /readyz (and /debug/pprof/ with --profiling); keep it private (empty: off). /metrics is never served on --listen")
	fs.StringVar(&o.AdminListen, "admin-listen", o.AdminListen, "older name of --metrics-listen")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "serve /debug/pprof/ on --metrics-listen")
	fs.StringVar(&o.ConnectListen, "connect-listen", o.ConnectListen, "TCP address of the HTTP CONNECT front end (empty: off); targets are CLUSTER<suffix>:PORT")
	fs.BoolVar(&o.ConnectTLS, "connect-tls", o.ConnectTLS, "serve --connect-listen in TLS with the serving certificate, accepting client certificates from --client-ca-file")
	fs.BoolVar(&o.ConnectInsecureCredentials, "connect-insecure-credentials", o.ConnectInsecureCredentials, "accept Proxy-Authorization tokens on --connect-listen without --connect-tls, where anyone on the path can read them")
	fs.StringVar(&o.ConnectUDS, "connect-uds", o.ConnectUDS, "Unix socket path of the CONNECT front end (empty: off); callers are trusted by the socket's file permissions")
	fs.StringVar(&o.ConnectUDSUser, "connect-uds-user", o.ConnectUDSUser, "identity given to callers on --connect-uds")
	fs.StringVar(&o.ConnectSocketDir, "connect-socket-dir", o.ConnectSocketDir, "directory of per-cluster CONNECT Unix sockets, DIR/CLUSTER.sock for every cluster (empty: off); on each, a node IP:PORT is that cluster's (for kube-apiserver egress selectors); callers act as --connect-uds-user")
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
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace", o.ShutdownGrace, "on SIGTERM, the most this replica keeps serving while its agents move to other replicas and requests finish; then watches end cleanly and it exits")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "on SIGTERM, the least this replica keeps serving (not ready), so load balancers stop sending it connections first")
	fs.DurationVar(&o.SessionMaxAge, "session-max-age", o.SessionMaxAge, "end an agent session after at most this long, less up to a fifth at random, so the agent reconnects and authenticates again (static tokens never expire; a certificate's session ends at its expiry anyway); 0: no limit")
	fs.IntVar(&o.MaxHandshakes, "max-handshakes", o.MaxHandshakes, "agent upgrades authenticated and set up at once; past it agents are answered 503 with Retry-After (reconnect storms)")
	fs.StringVar(&o.Registry, "registry", o.Registry, "where clusters are registered: static (--agent-token-file/--agent-token-dir) or kube (Cluster objects in the host cluster, with enrollment, agent certificates and Cluster status)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the host cluster for --registry=kube (empty: in-cluster service account)")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "host-cluster namespace of the hub's Secrets (CA, serving certificate, bootstrap tokens) and ConfigMaps")
	fs.StringVar(&o.CACertFile, "ca-cert-file", o.CACertFile, "PEM CA certificate that signs agent certificates (empty with --registry=kube: Secret backhaul-ca in --namespace, created on first start)")
	fs.StringVar(&o.CAKeyFile, "ca-key-file", o.CAKeyFile, "PEM key of --ca-cert-file")
	fs.DurationVar(&o.AgentCertValidity, "agent-cert-validity", o.AgentCertValidity, "lifetime of issued agent certificates; agents renew at two thirds")
	fs.Float64Var(&o.EnrollLimits.SourceRate, "enroll-rate-per-source", o.EnrollLimits.SourceRate, "with --registry=kube, requests per second one address (an IPv6 /64) may make to /v1/enroll and /v1/enroll/status after --enroll-burst-per-source; more are answered 429 with Retry-After (0: no limit). The address is the TCP peer's; X-Forwarded-For is ignored")
	fs.IntVar(&o.EnrollLimits.SourceBurst, "enroll-burst-per-source", o.EnrollLimits.SourceBurst, "enrollment requests one address may make at once")
	fs.Float64Var(&o.EnrollLimits.GlobalRate, "enroll-rate", o.EnrollLimits.GlobalRate, "requests per second all addresses together may make to /v1/enroll and /v1/enroll/status after --enroll-burst (0: no limit)")
	fs.IntVar(&o.EnrollLimits.GlobalBurst, "enroll-burst", o.EnrollLimits.GlobalBurst, "enrollment requests all addresses together may make at once")
	fs.IntVar(&o.EnrollLimits.MaxSources, "enroll-max-sources", o.EnrollLimits.MaxSources, "addresses whose enrollment rate is remembered; past it the least recent is forgotten, so many addresses cannot grow the hub's memory")
	fs.StringVar(&o.AdvertiseURL, "advertise-url", o.AdvertiseURL, "wss:// URL agents dial, published in ConfigMap backhaul-hub-info for backhaulctl's onboarding command")
	fs.StringVar(&o.TLSSANs, "tls-san", o.TLSSANs, "comma-separated extra DNS names or IPs for the serving certificate the hub issues itself (--registry=kube without --tls-cert-file)")
	fs.BoolVar(&o.TokenReview, "token-review", o.TokenReview, "with --registry=kube, authenticate callers' bearer tokens by TokenReview against the host cluster")
	fs.StringVar(&o.AuthorizationMode, "authorization-mode", o.AuthorizationMode, "AlwaysAllow or SubjectAccessReview (get clusters/proxy in backhaul.io, by cluster name, against the host cluster); empty: SubjectAccessReview with --registry=kube, else AlwaysAllow")
	fs.DurationVar(&o.AuthCacheTTL, "auth-cache-ttl", o.AuthCacheTTL, "how long TokenReview and SubjectAccessReview answers are cached")
	fs.StringVar(&o.MemberUserPrefix, "member-username-prefix", o.MemberUserPrefix, "prefix of callers' user names as members see them (impersonated by the agent); names in the system: space get --member-system-username-prefix instead")
	fs.StringVar(&o.MemberSystemUserPrefix, "member-system-username-prefix", o.MemberSystemUserPrefix, "prefix of callers' system: user names (host service accounts, nodes) as members see them, so a host service account never acts as a member's; not empty, and within backhaul: only backhaul:host:")
	fs.StringVar(&o.MemberGroupPrefix, "member-groups-prefix", o.MemberGroupPrefix, "prefix of callers' groups as members see them; system: groups other than system:authenticated are dropped")
	fs.DurationVar(&o.StatusInterval, "cluster-status-interval", o.StatusInterval, "how often the hub probes each connected member's /readyz through the tunnel")
	fs.DurationVar(&o.Heartbeat, "cluster-heartbeat-interval", o.Heartbeat, "how often Cluster status is written when nothing changed")
	o.TunnelHealth.flags(fs)
	fs.StringVar(&o.ReplicaName, "replica-name", o.ReplicaName, "this hub replica's name in Cluster status (default: $POD_NAME or the host name)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "with --registry=kube, replicas compete for Lease backhaul-hub in --namespace to do the singleton work (Cluster status, Propagation controller, token clean-up); every replica serves either way")
	fs.StringVar(&o.PeerListen, "peer-listen", o.PeerListen, "with --registry=kube, TLS address where other hub replicas connect to forward streams (empty: this replica serves only the agents connected to it)")
	fs.StringVar(&o.PeersService, "peers-service", o.PeersService, "headless Service in --namespace whose EndpointSlices (port \"peer\") list the hub replicas")
	fs.BoolVar(&o.Propagation, "propagation", o.Propagation, "with --registry=kube, run the Propagation controller, which pushes objects to members through their tunnels")
	fs.IntVar(&o.PropagationWorkers, "propagation-workers", o.PropagationWorkers, "Propagations reconciled at once")
	fs.IntVar(&o.PropagationMaxWatchedCopies, "propagation-max-watched-copies", o.PropagationMaxWatchedCopies, "most objects labelled backhaul.io/propagation of one kind the hub watches (and keeps the metadata of) in one member; a member holding more is not watched until its tunnel returns, and its copies are re-applied at each resync instead")
	fs.DurationVar(&o.PropagationResync, "propagation-resync", o.PropagationResync, "how often every Propagation is checked in full in every connected cluster, a safety net: drift is seen by watching the copies in members; a copy no watch vouches for is re-applied")
	fs.Var(&o.Recording, "recording", "record exec and attach sessions through the gateway as asciicast v2 files in --recording-dir: off; best-effort (a session that cannot be recorded goes on, and is counted); required (a session that cannot be recorded is refused, and one whose recording fails is ended)")
	fs.StringVar(&o.RecordingDir, "recording-dir", o.RecordingDir, "directory of session recordings, DIR/REQUEST-ID.cast, made (0700) if missing; required with --recording")
	fs.BoolVar(&o.RecordingStdin, "recording-stdin", o.RecordingStdin, "with --recording, also record what callers send on stdin (input events); off by default, as stdin carries passwords typed at prompts that do not echo")
	fs.Var(&o.StreamWindow, "stream-window", "largest receive window of one tunnel stream, a `size` from 256Ki to 64Mi: a stream moves at most this much per round trip, and a caller that stops reading pins this much hub memory per stream")
	fs.IntVar(&o.MaxStreamsPerCaller, "max-streams-per-caller", o.MaxStreamsPerCaller, "streams (gateway requests in progress, CONNECT tunnels) one caller, by user name, may hold through this replica at once; beyond it 429 with Retry-After (0: no limit)")
	fs.IntVar(&o.MaxStreamsPerCluster, "max-streams-per-cluster", o.MaxStreamsPerCluster, "streams all callers together may hold to one cluster through this replica at once; beyond it 429 with Retry-After (0: no limit)")
	fs.StringVar(&o.MemoryLimit, "memory-limit", o.MemoryLimit, "memory limit the stream budget is taken from, e.g. 1Gi (empty: GOMEMLIMIT, else the cgroup's limit, else no budget)")
	fs.Float64Var(&o.MemoryBudget, "memory-budget", o.MemoryBudget, "share of the memory limit in use above which new streams are refused with 503 and Retry-After, while open ones go on (0: never refuse)")
	fs.StringVar(&o.Audit.Path, "audit-log-path", o.Audit.Path, "file of the audit log of callers' requests (gateway and CONNECT, refusals included), one audit.k8s.io/v1 Event per line, rotated; - for standard output; empty: no audit log")
	fs.StringVar(&o.Audit.PolicyFile, "audit-policy-file", o.Audit.PolicyFile, "kube-apiserver audit Policy (audit.k8s.io/v1) choosing what is recorded; levels above Metadata record Metadata (the hub reads no bodies); empty: every request at Metadata")
	fs.IntVar(&o.Audit.MaxSize, "audit-log-maxsize", o.Audit.MaxSize, "megabytes at which the audit log is rotated")
	fs.IntVar(&o.Audit.MaxBackups, "audit-log-maxbackup", o.Audit.MaxBackups, "rotated audit log files kept (0: all)")
	fs.IntVar(&o.Audit.MaxAge, "audit-log-maxage", o.Audit.MaxAge, "days rotated audit log files are kept (0: no limit)")
	fs.BoolVar(&o.Audit.Compress, "audit-log-compress", o.Audit.Compress, "gzip rotated audit log files")
	fs.IntVar(&o.Audit.QueueSize, "audit-log-queue-size", o.Audit.QueueSize, "audit events that may wait to be written; when the log falls this far behind, events are dropped (backhaul_hub_audit_events_dropped_total) and requests go on")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "log format: text or json")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "log level: trace, debug, info, warn, error")
}

// Logging is how the hub logs.
func (o *Options) Logging() logging.Options { return o.Log }
