package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const (
	// NetnsPrefix prefixes the network namespace of every member; pass it to
	// [CleanupStale] to clear namespaces left by crashed runs.
	NetnsPrefix = "bhe2e-"
	// APIServerPort is the member apiserver's secure port inside its namespace.
	APIServerPort = 6443
	// ReadyTimeout bounds how long [StartMember] waits for /readyz.
	ReadyTimeout = 120 * time.Second

	readyPollInterval = 500 * time.Millisecond
	etcdQuotaBytes    = 8 << 30
)

// MemberConfig describes a member cluster to start.
type MemberConfig struct {
	Name  string // short DNS label, unique among concurrently running members
	Index int    // 1..200, picks the 10.251.<Index>.0/30 subnet; unique too
	Dir   string // scratch directory for data, certificates and logs
	// APIServerArgs are appended to kube-apiserver's flags (e.g. an egress
	// selector for a "cloud" control plane).
	APIServerArgs []string
	// EtcdServers, when set, is an etcd the member's API server uses
	// instead of starting its own in the namespace (for example a
	// [SharedEtcd]'s URL), under the key prefix EtcdPrefix, which must
	// then be set and distinct from every other member's in that etcd.
	EtcdServers string
	EtcdPrefix  string
}

// Member is a running member cluster: etcd and kube-apiserver inside a
// firewalled network namespace. Its apiserver is reachable only from inside
// the namespace (InternalURL); a direct dial from the root namespace to
// ExternalURL times out.
type Member struct {
	Name            string
	Netns           *Netns
	Dir             string
	CAFile          string        // PEM CA that signed the apiserver's serving cert
	CAPEM           []byte        // contents of CAFile
	CA              *CA           // the member's CA, to issue more certificates (a kubelet's)
	AdminToken      string        // bearer token of user "admin" in group system:masters
	NobodyToken     string        // bearer token of user "nobody", no groups, no RBAC grants
	InternalURL     string        // https://127.0.0.1:6443, valid inside the namespace
	ExternalURL     string        // https://<NSIP>:6443, blocked from the root namespace
	AdminKubeconfig string        // kubeconfig for InternalURL as admin (for use inside the namespace)
	StartupTime     time.Duration // from starting etcd to the apiserver being ready

	bins      Binaries
	logDir    string
	etcdArgs  []string // empty when the member uses an external etcd
	saKeyFile string   // signs and verifies service account tokens
	apiArgs   []string
	// extraArgs come from MemberConfig.APIServerArgs.
	extraArgs []string

	mu        sync.Mutex // guards etcd, apiserver and stopped
	etcd      *Process
	apiserver *Process
	// controllers are kube-controller-manager and kube-scheduler, once
	// [Member.StartControlPlane] has started them.
	controllers []*Process
	nodes       []*Node // stopped before the rest, see [StartNode]
	stopped     bool
	stopOnce    sync.Once
	stopErr     error
}

// StartMember creates the member's namespace, starts etcd and kube-apiserver
// in it and waits up to [ReadyTimeout] for /readyz. On failure everything
// started is torn down and the error carries the tail of the logs, which stay
// in cfg.Dir. ctx bounds start-up only; stop the member with [Member.Stop].
func StartMember(ctx context.Context, cfg MemberConfig) (_ *Member, err error) {
	if !validMemberName(cfg.Name) {
		return nil, fmt.Errorf("member: invalid name %q (want a DNS label of at most 40 characters)", cfg.Name)
	}
	if cfg.Index < 1 || cfg.Index > 200 {
		return nil, fmt.Errorf("member %s: index %d out of range 1..200", cfg.Name, cfg.Index)
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("member %s: empty Dir", cfg.Name)
	}
	if (cfg.EtcdServers == "") != (cfg.EtcdPrefix == "") {
		return nil, fmt.Errorf("member %s: EtcdServers and EtcdPrefix go together", cfg.Name)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", cfg.Name, err)
	}
	bins, err := LocateBinaries()
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", cfg.Name, err)
	}
	ns, err := NewNetns(NetnsPrefix+cfg.Name, cfg.Index)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", cfg.Name, err)
	}
	m := &Member{
		Name:            cfg.Name,
		Netns:           ns,
		Dir:             dir,
		InternalURL:     fmt.Sprintf("https://127.0.0.1:%d", APIServerPort),
		ExternalURL:     fmt.Sprintf("https://%s:%d", ns.NSIP, APIServerPort),
		AdminKubeconfig: filepath.Join(dir, "admin.kubeconfig"),
		bins:            bins,
		logDir:          filepath.Join(dir, "logs"),
		extraArgs:       cfg.APIServerArgs,
	}
	defer func() {
		if err != nil {
			_ = m.Stop()
			err = fmt.Errorf("member %s: %w", cfg.Name, err)
		}
	}()
	if err := m.prepare(cfg.EtcdServers, cfg.EtcdPrefix); err != nil {
		return nil, err
	}

	start := time.Now()
	if m.etcdArgs != nil {
		m.mu.Lock()
		m.etcd, err = Start(ctx, "etcd", m.logDir, ns.Command(context.WithoutCancel(ctx), bins.Etcd, m.etcdArgs...))
		m.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if err := m.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	m.StartupTime = time.Since(start)
	return m, nil
}

// prepare writes certificates, keys, the token file and the kubeconfig, and
// computes the etcd and apiserver command lines: no etcd of its own when
// etcdServers names one, whose keys under etcdPrefix are the member's.
func (m *Member) prepare(etcdServers, etcdPrefix string) error {
	for _, d := range []string{m.Dir, m.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	pkiDir := filepath.Join(m.Dir, "pki")
	ca, err := NewCA(pkiDir, "ca")
	if err != nil {
		return err
	}
	m.CAFile, m.CAPEM, m.CA = ca.CertFile, ca.CertPEM, ca
	// The API server talks to kubelets (the test kubelet) with a client
	// certificate from the member CA and verifies them against it.
	kcCert, kcKey, err := ca.Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"kubeadm:cluster-admins"})
	if err != nil {
		return err
	}
	hosts := []string{"127.0.0.1", m.Netns.NSIP.String(), "localhost", "10.96.0.1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	servingCert, servingKey, err := ca.Serving("apiserver", hosts)
	if err != nil {
		return err
	}
	saKey := filepath.Join(pkiDir, "service-account.key")
	if err := WriteKey(saKey); err != nil {
		return err
	}
	m.saKeyFile = saKey
	if m.AdminToken, err = newToken(); err != nil {
		return err
	}
	if m.NobodyToken, err = newToken(); err != nil {
		return err
	}
	tokenFile := filepath.Join(m.Dir, "tokens.csv")
	tokens := fmt.Sprintf("%s,admin,admin,\"system:masters\"\n%s,nobody,nobody\n", m.AdminToken, m.NobodyToken)
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err := WriteKubeconfig(m.AdminKubeconfig, m.InternalURL, m.CAPEM, m.AdminToken); err != nil {
		return err
	}

	if etcdServers == "" {
		etcdServers = "http://127.0.0.1:2379"
		m.etcdArgs = etcdArgs(m.Name, filepath.Join(m.Dir, "etcd"), etcdServers, "http://127.0.0.1:2380")
	}
	m.apiArgs = []string{
		"--etcd-servers=" + etcdServers,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address=" + m.Netns.NSIP.String(),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokenFile,
		"--tls-cert-file=" + servingCert,
		"--tls-private-key-file=" + servingKey,
		"--client-ca-file=" + m.CAFile,
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--cert-dir=" + filepath.Join(m.Dir, "apiserver-certs"),
		"--enable-priority-and-fairness=false",
		// Debian's etcd 3.4.23 predates the progress-notify fixes (3.4.31)
		// the 1.36 watch cache needs to serve fresh watches; with the cache
		// on, a watch started right after a write times out with "Too large
		// resource version". Serve lists and watches from etcd directly.
		"--watch-cache=false",
		"--profiling=false",
		"--kubelet-client-certificate=" + kcCert,
		"--kubelet-client-key=" + kcKey,
		"--kubelet-certificate-authority=" + ca.CertFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--v=1",
	}
	if etcdPrefix != "" {
		m.apiArgs = append(m.apiArgs, "--etcd-prefix="+etcdPrefix)
	}
	m.apiArgs = append(m.apiArgs, m.extraArgs...)
	return nil
}

// StartAPIServer starts kube-apiserver if it is not running (for example
// after [Member.StopAPIServer]) and waits up to [ReadyTimeout] for /readyz.
// On failure the error carries the tails of the logs.
func (m *Member) StartAPIServer(ctx context.Context) error {
	if err := m.startAPIServer(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, m.Logs())
	}
	return nil
}

func (m *Member) startAPIServer(ctx context.Context) error {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return errors.New("member is stopped")
	}
	if m.apiserver != nil {
		select {
		case <-m.apiserver.Exited():
		default:
			m.mu.Unlock()
			return m.waitReady(ctx)
		}
	}
	cmd := m.Netns.Command(context.WithoutCancel(ctx), m.bins.KubeAPIServer, m.apiArgs...)
	p, err := Start(ctx, "kube-apiserver", m.logDir, cmd)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.apiserver = p
	m.mu.Unlock()
	return m.waitReady(ctx)
}

// waitReady polls /readyz from inside the namespace until it answers "ok",
// failing early if etcd or the apiserver exits.
func (m *Member) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	m.mu.Lock()
	procs := []*Process{m.apiserver}
	if m.etcd != nil {
		procs = append(procs, m.etcd)
	}
	m.mu.Unlock()

	var lastErr error
	for {
		for _, p := range procs {
			select {
			case <-p.Exited():
				return fmt.Errorf("%s exited while waiting for readiness: %v", p.Name(), p.Err())
			default:
			}
		}
		out, _, err := m.Kubectl(ctx, "get", "--raw=/readyz", "--request-timeout=5s")
		if err == nil && strings.TrimSpace(out) == "ok" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("unexpected /readyz response %q", out)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(readyPollInterval):
		}
	}
}

// APIServerProcess is the current kube-apiserver process, or nil before
// the first start (for measuring it; stop it with [Member.StopAPIServer]).
func (m *Member) APIServerProcess() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apiserver
}

// EtcdProcess is the member's own etcd process, or nil when it uses an
// external one (MemberConfig.EtcdServers).
func (m *Member) EtcdProcess() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// Kubectl runs the real kubectl inside the member's namespace against
// InternalURL as admin: a direct write to the member, bypassing any tunnel.
// On failure the error includes stderr.
func (m *Member) Kubectl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return m.kubectl(ctx, args)
}

// KubectlAs is like [Member.Kubectl] but authenticates with token (for
// example NobodyToken) instead of the admin token.
func (m *Member) KubectlAs(ctx context.Context, token string, args ...string) (stdout, stderr string, err error) {
	return m.kubectl(ctx, append([]string{"--token=" + token}, args...))
}

func (m *Member) kubectl(ctx context.Context, args []string) (string, string, error) {
	full := append([]string{
		"--kubeconfig=" + m.AdminKubeconfig,
		"--cache-dir=" + filepath.Join(m.Dir, "kubectl-cache"),
	}, args...)
	cmd := m.Netns.Command(ctx, m.bins.Kubectl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("kubectl %s (in %s): %w: %s",
			strings.Join(args, " "), m.Netns.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), stderr.String(), nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after
// [StopGracePeriod]) and leaves etcd and the namespace up. It is idempotent.
func (m *Member) StopAPIServer() {
	m.mu.Lock()
	p := m.apiserver
	m.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// Stop stops kube-apiserver and etcd (its own: an external etcd keeps
// running, with the member's keys) and deletes the namespace. Data and logs
// stay in Dir. It is idempotent and safe to call concurrently.
func (m *Member) Stop() error {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.stopped = true
		etcd, controllers, nodes := m.etcd, m.controllers, m.nodes
		m.mu.Unlock()
		// A node's containers outlive the namespace (each Pod has its
		// own), so nodes go first.
		var errs []error
		for _, n := range nodes {
			errs = append(errs, n.Stop())
		}
		for _, p := range controllers {
			p.Stop()
		}
		m.StopAPIServer()
		if etcd != nil {
			etcd.Stop()
		}
		m.stopErr = errors.Join(append(errs, m.Netns.Close())...)
	})
	return m.stopErr
}

// addNode records n so [Member.Stop] stops it first.
func (m *Member) addNode(n *Node) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("member is stopped")
	}
	m.nodes = append(m.nodes, n)
	return nil
}

// Logs returns the tails of the etcd and kube-apiserver logs, for test
// failure messages.
func (m *Member) Logs() string {
	var b strings.Builder
	for _, l := range []struct {
		name  string
		lines int
	}{{"etcd", 15}, {"kube-apiserver", 40}} {
		if l.name == "etcd" && m.etcdArgs == nil {
			continue // external: its log is its owner's
		}
		path := filepath.Join(m.logDir, l.name+".log")
		fmt.Fprintf(&b, "--- %s (last %d lines of %s) ---\n%s\n", l.name, l.lines, path, tailFile(path, l.lines))
	}
	return b.String()
}

func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func validMemberName(s string) bool {
	if s == "" || len(s) > 40 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
