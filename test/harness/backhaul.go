package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// buildBinaries builds Go packages of this repository into the bin dir
// (EnvBinDir, or _output/bin) and returns the path of each binary, named
// after its package directory. It always runs go build, with the flags and
// version stamp `make build` uses: right after `make build` that is a no-op
// that leaves its binaries as they are, and after a change it builds the
// new code (a stale binary would test old code) still stamped, never a
// "dev" build over a stamped one.
func buildBinaries(ctx context.Context, pkgs ...string) ([]string, error) {
	dir, err := binDir()
	if err != nil {
		return nil, err
	}
	if err := goBuild(ctx, dir+"/", pkgs...); err != nil {
		return nil, err
	}
	paths := make([]string, len(pkgs))
	for i, p := range pkgs {
		paths[i] = filepath.Join(dir, filepath.Base(p))
	}
	return paths, nil
}

// binDir is EnvBinDir, or _output/bin.
func binDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "_output", "bin"), nil
}

// goBuild runs go build -o out for pkgs from the repository root, with
// make build's flags.
func goBuild(ctx context.Context, out string, pkgs ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X " + versionVar + "=" + BuildVersion(), "-o", out}
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}

// versionVar is the variable the Makefile stamps with -X.
const versionVar = "backhaul.io/backhaul/pkg/version.Version"

// BuildVersion is the version buildBinaries stamps, worked out as the
// Makefile does: $VERSION, else `git describe --tags --always --dirty`,
// else "dev". It is worked out once, so every binary a suite builds
// reports the same version even if the tree changes meanwhile.
var BuildVersion = sync.OnceValue(func() string {
	if v := os.Getenv("VERSION"); v != "" {
		return v
	}
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	if root, err := RepoRoot(); err == nil {
		cmd.Dir = root
	}
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
})

// BackhaulBinaries builds backhaul-hub and backhaul-agent into the bin dir.
func BackhaulBinaries(ctx context.Context) (hub, agent string, err error) {
	paths, err := buildBinaries(ctx, "./hub/cmd/backhaul-hub", "./agent/cmd/backhaul-agent")
	if err != nil {
		return "", "", err
	}
	return paths[0], paths[1], nil
}

// CtlBinary builds backhaulctl into the bin dir.
func CtlBinary(ctx context.Context) (string, error) {
	paths, err := buildBinaries(ctx, "./hub/cmd/backhaulctl")
	if err != nil {
		return "", err
	}
	return paths[0], nil
}

// Caller is a hub caller identity from the hub's static token file.
type Caller struct {
	Token  string
	User   string
	Groups []string
}

// HubConfig describes a hub process.
type HubConfig struct {
	Binary string
	Dir    string
	// Port for the TLS listener (all interfaces, so agents in namespaces
	// reach it on their HostIP); 0 picks a free one.
	Port int
	// HostIPs are put in the serving certificate besides 127.0.0.1.
	HostIPs []string
	// Clusters get an agent token each.
	Clusters []string
	// Callers are written to the static token file.
	Callers map[string]Caller
	Args    []string
}

// Hub is a running backhaul-hub.
type Hub struct {
	cfg         HubConfig
	CA          *CA
	URL         string // https://127.0.0.1:PORT
	Port        int
	AdminURL    string // http://127.0.0.1:ADMINPORT
	ConnectAddr string // 127.0.0.1:PORT of the plain CONNECT front end
	ConnectUDS  string // path of the CONNECT Unix socket
	AgentTokens map[string]string
	proc        *Process
	certFile    string
	keyFile     string
	tokenFile   string
	agentFile   string
	adminPort   int
}

// StartHub writes certificates and token files and starts the hub.
func StartHub(ctx context.Context, cfg HubConfig) (*Hub, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := NewCA(cfg.Dir, "hub-ca")
	if err != nil {
		return nil, err
	}
	hosts := append([]string{"127.0.0.1", "localhost"}, cfg.HostIPs...)
	h := &Hub{cfg: cfg, CA: ca, AgentTokens: map[string]string{}}
	if h.certFile, h.keyFile, err = ca.Serving("hub", hosts); err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		if cfg.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if h.adminPort, err = FreePort(); err != nil {
		return nil, err
	}
	cport, err := FreePort()
	if err != nil {
		return nil, err
	}
	h.ConnectAddr = fmt.Sprintf("127.0.0.1:%d", cport)
	h.ConnectUDS = filepath.Join(cfg.Dir, "connect.sock")
	h.Port = cfg.Port
	h.URL = fmt.Sprintf("https://127.0.0.1:%d", cfg.Port)
	h.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", h.adminPort)

	var agents strings.Builder
	for _, c := range cfg.Clusters {
		tok, err := newToken()
		if err != nil {
			return nil, err
		}
		h.AgentTokens[c] = tok
		fmt.Fprintf(&agents, "%s,%s\n", tok, c)
	}
	h.agentFile = filepath.Join(cfg.Dir, "agent-tokens.csv")
	if err := os.WriteFile(h.agentFile, []byte(agents.String()), 0o600); err != nil {
		return nil, err
	}
	var callers strings.Builder
	for _, c := range cfg.Callers {
		fmt.Fprintf(&callers, "%s,%s,%s,%q\n", c.Token, c.User, c.User, strings.Join(c.Groups, ","))
	}
	h.tokenFile = filepath.Join(cfg.Dir, "callers.csv")
	if err := os.WriteFile(h.tokenFile, []byte(callers.String()), 0o600); err != nil {
		return nil, err
	}
	return h, h.Start(ctx)
}

// Start (re)starts the hub process on the same port and files.
func (h *Hub) Start(ctx context.Context) error {
	args := append([]string{
		"--listen", fmt.Sprintf(":%d", h.Port),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", h.adminPort),
		"--tls-cert-file", h.certFile, "--tls-key-file", h.keyFile,
		"--client-ca-file", h.CA.CertFile,
		"--token-auth-file", h.tokenFile,
		"--agent-token-file", h.agentFile,
		"--shutdown-grace", "2s", "--shutdown-delay", "0s",
		"--connect-listen", h.ConnectAddr, "--connect-insecure-credentials",
		"--connect-uds", h.ConnectUDS,
	}, h.cfg.Args...)
	p, err := Start(ctx, "backhaul-hub", h.cfg.Dir, exec.Command(h.cfg.Binary, args...))
	if err != nil {
		return err
	}
	h.proc = p
	return h.waitReady(ctx)
}

func (h *Hub) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(h.AdminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-h.proc.Exited():
			return fmt.Errorf("hub exited during start-up: %v\n%s", h.proc.Err(), h.proc.Tail(30))
		case <-ctx.Done():
			return fmt.Errorf("hub not ready: %w\n%s", ctx.Err(), h.proc.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the hub process (SIGTERM, then SIGKILL).
func (h *Hub) Stop() {
	if h.proc != nil {
		h.proc.Stop()
	}
}

// Process is the current hub process.
func (h *Hub) Process() *Process { return h.proc }

// ClusterURL is the gateway URL of a cluster.
func (h *Hub) ClusterURL(cluster string) string { return h.URL + "/clusters/" + cluster }

// TLSConfig trusts the hub's CA.
func (h *Hub) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.CA.CertPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// WriteKubeconfig writes a kubeconfig with one context per cluster, all
// through the hub's gateway with the caller's token; the current context is
// the first cluster.
func (h *Hub) WriteKubeconfig(path string, clusters []string, token string) error {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n")
	for _, c := range clusters {
		fmt.Fprintf(&b, "- name: %s\n  cluster:\n    server: %s\n    certificate-authority: %s\n", c, strconv.Quote(h.ClusterURL(c)), strconv.Quote(h.CA.CertFile))
	}
	fmt.Fprintf(&b, "users:\n- name: hub-caller\n  user:\n    token: %s\ncontexts:\n", strconv.Quote(token))
	for _, c := range clusters {
		fmt.Fprintf(&b, "- name: %s\n  context:\n    cluster: %s\n    user: hub-caller\n", c, c)
	}
	if len(clusters) > 0 {
		fmt.Fprintf(&b, "current-context: %s\n", clusters[0])
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// AgentConfig describes an agent process inside a member's namespace.
type AgentConfig struct {
	Binary  string
	Name    string // process/log name; defaults to agent-<cluster>
	Cluster string
	Token   string // hub token; defaults to the hub's for Cluster
	Args    []string
	Env     []string // added to the agent's environment (e.g. HTTPS_PROXY)
	// HubURL overrides wss://HOSTIP:PORT (e.g. to go through a proxy).
	HubURL string
	// AdminPort is the agent's admin port on the namespace's loopback;
	// 0 picks any free one.
	AdminPort int
}

// StartAgent runs an agent inside m's namespace, dialling the hub on the
// namespace's HostIP, with the member's admin kubeconfig.
func StartAgent(ctx context.Context, h *Hub, m *Member, cfg AgentConfig) (*Process, error) {
	if cfg.Name == "" {
		cfg.Name = "agent-" + cfg.Cluster
	}
	if cfg.Token == "" {
		cfg.Token = h.AgentTokens[cfg.Cluster]
	}
	tokFile := filepath.Join(m.Dir, cfg.Name+".token")
	if err := os.WriteFile(tokFile, []byte(cfg.Token), 0o600); err != nil {
		return nil, err
	}
	if cfg.HubURL == "" {
		cfg.HubURL = fmt.Sprintf("wss://%s:%d", m.Netns.HostIP, h.Port)
	}
	args := append([]string{
		"--hub-url", cfg.HubURL,
		"--hub-ca-file", h.CA.CertFile,
		"--cluster", cfg.Cluster,
		"--token-file", tokFile,
		"--kubeconfig", m.AdminKubeconfig,
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", cfg.AdminPort),
		"--backoff-base", "500ms", "--backoff-max", "3s",
	}, cfg.Args...)
	cmd := m.Netns.Command(context.Background(), cfg.Binary, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	return Start(ctx, cfg.Name, m.Dir, cmd)
}

// FreePort returns a TCP port free on all interfaces right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor polls cond every interval until it returns nil or timeout passes,
// returning the last error. An error wrapped by [Permanent] ends the wait
// at once.
func WaitFor(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = cond(); last == nil {
			return nil
		}
		var p permanentError
		if errors.As(last, &p) {
			return p.err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

// Permanent marks err as one [WaitFor] must not wait out (a process that
// exited, say).
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }
