package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/pkg/version"
	"backhaul.io/backhaul/tunnel"
)

// Options are backhaul-agent's command-line settings.
type Options struct {
	HubURL      string
	HubConns    int
	HubCAFile   string
	Cluster     string
	TokenFile   string
	CredSecret  string
	CertDir     string
	Kubeconfig  string
	AdminListen string
	Profiling   bool
	Allow       string
	DenyGroups  string
	NodeName    string
	NodeAddrs   string
	KubeletPort uint
	KeepAlive   time.Duration
	KeepWait    time.Duration
	BackoffBase time.Duration
	BackoffMax  time.Duration
	Log         logging.Options

	// StreamWindow bounds what one stream buffers here (the hub's
	// requests, exec stdin, port-forward uploads).
	StreamWindow tunnel.Window
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	t := tunnel.DefaultConfig()
	b := tunnel.DefaultBackoff()
	return &Options{
		HubConns:    2,
		AdminListen: ":9090",
		DenyGroups:  "system:masters",
		KubeletPort: 10250,
		KeepAlive:   t.KeepAliveInterval,
		KeepWait:    t.KeepAliveTimeout,
		BackoffBase: b.Base,
		BackoffMax:  b.Max,
		Log:         logging.Options{Name: "backhaul-agent", Format: "text", Level: "info"},

		StreamWindow: tunnel.Window(t.StreamWindow),
	}
}

// Flags registers the options on fs.
func (o *Options) Flags(fs *flag.FlagSet) {
	fs.StringVar(&o.HubURL, "hub-url", o.HubURL, "hub address, wss://host:port (HTTPS_PROXY and NO_PROXY are honoured)")
	fs.IntVar(&o.HubConns, "hub-connections", o.HubConns, "tunnel sessions to keep, each to a distinct hub replica, so losing or rolling one replica costs no request (fewer when the hub has fewer replicas; 1: a single session)")
	fs.StringVar(&o.HubCAFile, "hub-ca-file", o.HubCAFile, "PEM CA that signed the hub's serving certificate (empty: system roots)")
	fs.StringVar(&o.Cluster, "cluster", o.Cluster, "name of the cluster this agent serves")
	fs.StringVar(&o.TokenFile, "token-file", o.TokenFile, "file holding a static bearer token for the hub (standalone hubs with --agent-token-file)")
	fs.StringVar(&o.CredSecret, "credentials-secret", o.CredSecret, "NAMESPACE/NAME of the member Secret holding the bootstrap token and hub CA, where the agent stores its enrolled certificate (what onboard.sh sets up)")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory holding bootstrap-token and hub-ca.crt, where the agent stores tls.crt and tls.key (standalone alternative to --credentials-secret)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig for the member API server (empty: in-cluster service account)")
	fs.StringVar(&o.AdminListen, "admin-listen", o.AdminListen, "address for /healthz, /readyz and /metrics (empty: off)")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "serve /debug/pprof/ on --admin-listen; keep that address private when on")
	fs.StringVar(&o.Allow, "allow", o.Allow, "comma-separated TCP destinations the hub may dial through this agent: IP:port or CIDR:port, besides the member API server, which is always admitted")
	fs.StringVar(&o.DenyGroups, "deny-impersonate-groups", o.DenyGroups, "comma-separated groups never passed on when impersonating hub callers")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "node mode (DaemonSet on edge nodes): this node's name")
	fs.StringVar(&o.NodeAddrs, "node-addresses", o.NodeAddrs, "node mode: comma-separated IPs of this node; the hub routes CONNECT IP:PORT to this agent, which admits IP:--kubelet-port")
	fs.UintVar(&o.KubeletPort, "kubelet-port", o.KubeletPort, "node mode: the kubelet port admitted on --node-addresses")
	fs.DurationVar(&o.KeepAlive, "keepalive-interval", o.KeepAlive, "tunnel ping interval; keep below load-balancer idle timeouts")
	fs.DurationVar(&o.KeepWait, "keepalive-timeout", o.KeepWait, "how long a ping may go unanswered before reconnecting")
	fs.DurationVar(&o.BackoffBase, "backoff-base", o.BackoffBase, "first reconnect backoff ceiling (full jitter)")
	fs.DurationVar(&o.BackoffMax, "backoff-max", o.BackoffMax, "largest reconnect backoff")
	fs.Var(&o.StreamWindow, "stream-window", "largest receive window of one tunnel stream, a `size` from 256Ki to 64Mi: a stream moves at most this much per round trip, and one the member side stops reading pins this much agent memory")
	fs.StringVar(&o.Log.Format, "log-format", o.Log.Format, "log format: text or json")
	fs.StringVar(&o.Log.Level, "log-level", o.Log.Level, "log level: trace, debug, info, warn, error")
}

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	if u, err := url.Parse(o.HubURL); err != nil || (u.Scheme != "wss" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--hub-url %q: want wss://host:port", o.HubURL))
	}
	if o.HubConns < 1 {
		errs = append(errs, fmt.Errorf("--hub-connections %d: want at least 1", o.HubConns))
	}
	if msgs := validation.IsDNS1123Label(o.Cluster); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster %q: %s", o.Cluster, strings.Join(msgs, "; ")))
	}
	n := 0
	for _, v := range []string{o.TokenFile, o.CredSecret, o.CertDir} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		errs = append(errs, errors.New("exactly one of --token-file, --credentials-secret or --cert-dir is required"))
	}
	if o.CredSecret != "" {
		if ns, name, ok := strings.Cut(o.CredSecret, "/"); !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			errs = append(errs, fmt.Errorf("--credentials-secret %q: want NAMESPACE/NAME", o.CredSecret))
		}
	}
	if o.KeepAlive <= 0 || o.KeepWait <= 0 || o.BackoffBase <= 0 || o.BackoffMax < o.BackoffBase {
		errs = append(errs, errors.New("keepalive and backoff durations must be positive, and --backoff-max at least --backoff-base"))
	}
	if _, err := tunnel.ParseWindow(o.StreamWindow.String()); err != nil {
		errs = append(errs, fmt.Errorf("--stream-window: %w", err))
	}
	if _, err := ParseAllowlist(splitList(o.Allow)); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseAddrs(o.NodeAddrs); err != nil {
		errs = append(errs, err)
	}
	if (o.NodeAddrs != "") != (o.NodeName != "") {
		errs = append(errs, errors.New("node mode takes both --node-name and --node-addresses"))
	}
	if o.KubeletPort == 0 || o.KubeletPort > 65535 {
		errs = append(errs, fmt.Errorf("--kubelet-port %d out of range", o.KubeletPort))
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Config loads files and builds the agent's configuration.
func (o *Options) Config(log hclog.Logger) (Config, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.HubCAFile != "" {
		pem, err := os.ReadFile(o.HubCAFile)
		if err != nil {
			return Config{}, fmt.Errorf("hub CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Config{}, fmt.Errorf("hub CA %s: no certificates found", o.HubCAFile)
		}
		tlsCfg.RootCAs = pool
	}
	var member *rest.Config
	var err error
	if o.Kubeconfig != "" {
		member, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		member, err = rest.InClusterConfig()
	}
	if err != nil {
		return Config{}, fmt.Errorf("member API config: %w", err)
	}
	allow, err := ParseAllowlist(splitList(o.Allow))
	if err != nil {
		return Config{}, err
	}
	tcfg := tunnel.DefaultConfig()
	tcfg.KeepAliveInterval, tcfg.KeepAliveTimeout = o.KeepAlive, o.KeepWait
	tcfg.StreamWindow = uint32(o.StreamWindow)
	tcfg.Logger = log.Named(logging.Tunnel)
	h := http.Header{}
	var creds *Credentials
	switch {
	case o.TokenFile != "":
		tok, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return Config{}, fmt.Errorf("token: %w", err)
		}
		h.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	default:
		var store CredentialStore = &DirStore{Dir: o.CertDir}
		if o.CredSecret != "" {
			cs, err := kubernetes.NewForConfig(member)
			if err != nil {
				return Config{}, fmt.Errorf("member client: %w", err)
			}
			ns, name, _ := strings.Cut(o.CredSecret, "/")
			store = &SecretStore{Client: cs, Namespace: ns, Name: name}
		}
		creds = &Credentials{Store: store, Cluster: o.Cluster, HubURL: o.HubURL, TLS: tlsCfg, Log: log.Named(logging.Enroll)}
		tlsCfg.GetClientCertificate = creds.GetClientCertificate
	}
	h.Set(tunnel.HeaderCluster, o.Cluster)
	h.Set(tunnel.HeaderAgentVersion, version.Version)
	h.Set(tunnel.HeaderAgentFeatures, strings.Join(Features(), ","))
	nodeAddrs, err := parseAddrs(o.NodeAddrs)
	if err != nil {
		return Config{}, err
	}
	if o.NodeName != "" {
		h.Set(tunnel.HeaderNode, o.NodeName)
		h.Set(tunnel.HeaderNodeAddresses, o.NodeAddrs)
	}
	b := tunnel.DefaultBackoff()
	b.Base, b.Max = o.BackoffBase, o.BackoffMax
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return Config{
		Dialer:         &tunnel.Dialer{URL: o.HubURL, TLSConfig: tlsCfg, Header: h, Config: tcfg},
		Credentials:    creds,
		Backoff:        b,
		HubConnections: o.HubConns,
		Member:         member,
		Allow:          allow,
		DenyGroups:     splitList(o.DenyGroups),
		NodeAddresses:  nodeAddrs,
		KubeletPort:    uint16(o.KubeletPort),
		AdminListen:    o.AdminListen,
		Profiling:      o.Profiling,
		Log:            log,
		Registry:       reg,
	}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, p := range splitList(s) {
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--node-addresses: %w", err)
		}
		out = append(out, ip)
	}
	return out, nil
}

// Logging is how the agent logs.
func (o *Options) Logging() logging.Options { return o.Log }
