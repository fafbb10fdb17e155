package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// konnectivity's commands, as this module pins them (go.mod's tool block).
const (
	knpServerPkg = "sigs.k8s.io/apiserver-network-proxy/cmd/server"
	knpAgentPkg  = "sigs.k8s.io/apiserver-network-proxy/cmd/agent"
	// knpVerbosity is the klog level both commands run at. Their mains
	// default to 4, a log line per packet, which would cost them CPU the
	// others (logging warnings only) do not spend.
	knpVerbosity = 0
	// knpBackends is the server's gauge of connected agents.
	knpBackends = "konnectivity_network_proxy_server_ready_backend_connections"
)

// knpBinaries are konnectivity's proxy-server and proxy-agent, built from
// the module proxy at the version go.mod pins.
type knpBinaries struct {
	server, agent string
	err           error
}

// buildKonnectivity builds both commands into <bin>/peers (go's build
// cache makes a second run a no-op).
func buildKonnectivity(ctx context.Context, bin string) *knpBinaries {
	dir, err := filepath.Abs(filepath.Join(bin, "peers"))
	if err != nil {
		return &knpBinaries{err: err}
	}
	b := &knpBinaries{server: filepath.Join(dir, "konnectivity-server"), agent: filepath.Join(dir, "konnectivity-agent")}
	for _, c := range []struct{ out, pkg string }{{b.server, knpServerPkg}, {b.agent, knpAgentPkg}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", c.out, c.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", c.pkg, err, out)
			return b
		}
	}
	return b
}

// knpPKI is konnectivity's certificates: one CA signs the server's serving
// certificate (agent side and TCP frontend) and the client certificates of
// the agents and of the frontend's callers.
type knpPKI struct {
	ca                    *harness.CA
	serverCert, serverKey string
	agentCert, agentKey   string
	callerCert, callerKey string
}

func newKNPPKI(dir string) (*knpPKI, error) {
	ca, err := harness.NewCA(dir, "knp-ca")
	if err != nil {
		return nil, err
	}
	p := &knpPKI{ca: ca}
	if p.serverCert, p.serverKey, err = ca.Serving("knp-server", []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, err
	}
	if p.agentCert, p.agentKey, err = ca.Client("knp-agent", "konnectivity-agent", nil); err != nil {
		return nil, err
	}
	if p.callerCert, p.callerKey, err = ca.Client("knp-caller", "kube-apiserver", nil); err != nil {
		return nil, err
	}
	return p, nil
}

// clientTLS trusts the CA and presents the given client certificate.
func (p *knpPKI) clientTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca.CertPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// knpServer is a running proxy-server.
type knpServer struct {
	proc      *harness.Process
	agentPort int
	health    string // http://127.0.0.1:PORT (/metrics, /readyz)
	uds       string // frontend socket, or ""
	tcp       string // frontend host:port, or ""
}

// startKNPServer starts proxy-server in http-connect mode with its
// frontend on a Unix socket (uds) or on TCP, which it serves only with
// mTLS.
func startKNPServer(ctx context.Context, stops *stopList, dir, name, bin string, pki *knpPKI, uds bool) (*knpServer, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePortIn(20000, 49151)
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	s := &knpServer{agentPort: ports[0], health: fmt.Sprintf("http://127.0.0.1:%d", ports[2])}
	args := []string{
		"--mode=http-connect",
		"--server-id=" + name, "--server-count=1",
		"--agent-bind-address=127.0.0.1", "--agent-port=" + strconv.Itoa(ports[0]),
		"--admin-bind-address=127.0.0.1", "--admin-port=" + strconv.Itoa(ports[1]),
		"--health-bind-address=127.0.0.1", "--health-port=" + strconv.Itoa(ports[2]),
		"--cluster-cert=" + pki.serverCert, "--cluster-key=" + pki.serverKey, "--cluster-ca-cert=" + pki.ca.CertFile,
	}
	if uds {
		s.uds = filepath.Join(dir, name+".sock")
		args = append(args, "--uds-name="+s.uds, "--server-port=0", "--delete-existing-uds-file")
	} else {
		s.tcp = fmt.Sprintf("127.0.0.1:%d", ports[3])
		args = append(args, "--server-bind-address=127.0.0.1", "--server-port="+strconv.Itoa(ports[3]),
			"--server-cert="+pki.serverCert, "--server-key="+pki.serverKey, "--server-ca-cert="+pki.ca.CertFile)
	}
	args = append(args, "--v="+strconv.Itoa(knpVerbosity))
	var err error
	if s.proc, err = startProcess(ctx, stops, dir, name, exec.Command(bin, args...)); err != nil {
		return nil, err
	}
	return s, waitUp(ctx, s.proc, 20*time.Second, func() error {
		_, err := s.backends(ctx)
		return err
	})
}

// backends is how many agents the server holds.
func (s *knpServer) backends(ctx context.Context) (int, error) {
	m, err := scrapeMetrics(ctx, s.health+"/metrics", knpBackends)
	return int(m[knpBackends]), err
}

// goroutines is the server's go_goroutines.
func (s *knpServer) goroutines(ctx context.Context) (float64, error) {
	m, err := scrapeMetrics(ctx, s.health+"/metrics", "go_goroutines")
	return m["go_goroutines"], err
}

// startKNPAgent starts one proxy-agent for s and waits for s to hold it.
func startKNPAgent(ctx context.Context, stops *stopList, dir, name, bin string, pki *knpPKI, s *knpServer) (*harness.Process, error) {
	admin, err := freePortIn(20000, 49151)
	if err != nil {
		return nil, err
	}
	health, err := freePortIn(20000, 49151)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--agent-id=" + name,
		"--proxy-server-host=127.0.0.1", "--proxy-server-port=" + strconv.Itoa(s.agentPort),
		"--ca-cert=" + pki.ca.CertFile, "--agent-cert=" + pki.agentCert, "--agent-key=" + pki.agentKey,
		"--admin-bind-address=127.0.0.1", "--admin-server-port=" + strconv.Itoa(admin),
		"--health-server-host=127.0.0.1", "--health-server-port=" + strconv.Itoa(health),
		"--v=" + strconv.Itoa(knpVerbosity),
	}
	p, err := startProcess(ctx, stops, dir, name, exec.Command(bin, args...))
	if err != nil {
		return nil, err
	}
	// proxy-agent drains on the first SIGTERM and stops on the second;
	// the harness's Stop sends the second.
	stops.add(func() {
		_ = syscall.Kill(p.PID(), syscall.SIGTERM)
		time.Sleep(100 * time.Millisecond)
	})
	return p, waitUp(ctx, s.proc, 30*time.Second, func() error {
		n, err := s.backends(ctx)
		if err == nil && n < 1 {
			err = fmt.Errorf("no agent connected")
		}
		return err
	})
}

// startKonnectivity runs two server and agent pairs, one with its frontend
// on a Unix socket and one on TCP (mTLS), and returns their CONNECT dials.
func startKonnectivity(ctx context.Context, stops *stopList, dir string, bins *knpBinaries, origin string) ([]endpoint, error) {
	pki, err := newKNPPKI(dir)
	if err != nil {
		return nil, err
	}
	var eps []endpoint
	for _, uds := range []bool{true, false} {
		name := map[bool]string{true: "knp-uds", false: "knp-tcp"}[uds]
		s, err := startKNPServer(ctx, stops, dir, name+"-server", bins.server, pki, uds)
		if err != nil {
			return nil, err
		}
		agent, err := startKNPAgent(ctx, stops, dir, name+"-agent", bins.agent, pki, s)
		if err != nil {
			return nil, err
		}
		if uds {
			eps = append(eps, endpoint{(&connectDialer{network: "unix", addr: s.uds, target: origin}).dial, s.proc, agent})
			continue
		}
		tlsCfg, err := pki.clientTLS(pki.callerCert, pki.callerKey)
		if err != nil {
			return nil, err
		}
		// The frontend speaks HTTP/1.1 CONNECT inside TLS.
		tlsCfg.NextProtos = []string{"http/1.1"}
		eps = append(eps, endpoint{(&connectDialer{network: "tcp", addr: s.tcp, tls: tlsCfg, target: origin}).dial, s.proc, agent})
	}
	return eps, nil
}
