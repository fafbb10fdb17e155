package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"backhaul.io/backhaul/test/harness"
)

// envKubelet makes the test binary a minimal kubelet: "ADDR|CERT|KEY".
// It serves containerLogs and exec (commands run on the host, through the
// upstream streaming library); attach, port-forward and log follow come
// with the full test kubelet.
const envKubelet = "BACKHAUL_E2E_KUBELET"

func serveKubeletStandIn(spec string) int {
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "want ADDR|CERT|KEY")
		return 2
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "log line from %s/%s/%s on the edge node\n", r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"))
	})
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		remotecommand.ServeExec(w, r, hostExecutor{}, r.PathValue("pod"), "", r.PathValue("container"),
			r.URL.Query()["command"], opts, time.Hour, 30*time.Second, remotecommand.SupportedStreamingProtocols)
	})
	srv := &http.Server{Addr: parts[0], Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServeTLS(parts[1], parts[2]); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// hostExecutor runs exec commands as host processes.
type hostExecutor struct{}

func (hostExecutor) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return fmt.Errorf("no command")
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	if in != nil {
		c.Stdin = in
	}
	if out != nil {
		c.Stdout = out
	}
	if errw != nil {
		c.Stderr = errw
	}
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return utilexec.ExitErrorWrapper{ExitError: ee}
	}
	return err
}

// Edge topology: a cloud kube-apiserver whose "cluster" egress goes to the
// hub's CONNECT Unix socket reaches a kubelet on an edge node that accepts
// no inbound connection, through the node-mode agent there.
func TestEgressSelectorReachesEdgeKubelet(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	edge := e.members["m2"]
	const nodeIP, nodeName = "10.252.2.1", "edge-node-1"

	// The edge node: an address in the site, a kubelet on it, a node agent.
	out, err := edge.Netns.Command(ctx, "ip", "addr", "add", nodeIP+"/32", "dev", "lo").CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() {
		_ = edge.Netns.Command(context.Background(), "ip", "addr", "del", nodeIP+"/32", "dev", "lo").Run()
	})
	kca, err := harness.NewCA(filepath.Join(t.TempDir()), "kubelet-ca")
	require.NoError(t, err)
	cert, key, err := kca.Serving("kubelet", []string{nodeIP})
	require.NoError(t, err)
	cmd := edge.Netns.Command(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envKubelet+"="+nodeIP+":10250|"+cert+"|"+key)
	kubelet, err := harness.Start(ctx, "kubelet-"+nodeName, edge.Dir, cmd)
	require.NoError(t, err)
	t.Cleanup(kubelet.Stop)
	agent, err := harness.StartAgent(ctx, e.hub, edge, harness.AgentConfig{
		Binary: e.agentBin, Name: "agent-" + nodeName, Cluster: "m2",
		Args: []string{"--node-name", nodeName, "--node-addresses", nodeIP},
	})
	require.NoError(t, err)
	t.Cleanup(agent.Stop)

	// The cloud control plane.
	dir := t.TempDir()
	egress := filepath.Join(dir, "egress.yaml")
	require.NoError(t, os.WriteFile(egress, []byte(fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, e.hub.ConnectUDS)), 0o600))
	cloud, err := harness.StartMember(ctx, harness.MemberConfig{
		Name: "cloud", Index: 43, Dir: filepath.Join(dir, "cloud"),
		APIServerArgs: []string{
			"--egress-selector-config-file=" + egress,
			"--kubelet-certificate-authority=" + kca.CertFile,
			"--kubelet-preferred-address-types=InternalIP",
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cloud.Stop() })
	k := func(args ...string) (string, error) {
		stdout, stderr, err := cloud.Kubectl(ctx, args...)
		return stdout + stderr, err
	}
	objects := filepath.Join(cloud.Dir, "edge.yaml")
	require.NoError(t, os.WriteFile(objects, []byte(`apiVersion: v1
kind: Node
metadata:
  name: edge-node-1
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: default
---
apiVersion: v1
kind: Pod
metadata:
  name: edge-pod
  namespace: default
spec:
  nodeName: edge-node-1
  automountServiceAccountToken: false
  containers:
  - name: app
    image: example.invalid/app
`), 0o600))
	out2, err := k("apply", "-f", objects)
	require.NoError(t, err, out2)
	out2, err = k("patch", "node", nodeName, "--subresource=status", "--type=merge", "-p",
		fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":%q}],"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}}}}`, nodeIP))
	require.NoError(t, err, out2)

	var logs string
	require.NoError(t, harness.WaitFor(ctx, 20*time.Second, 300*time.Millisecond, func() error {
		logs, err = k("logs", "edge-pod", "-c", "app")
		if err != nil {
			return fmt.Errorf("%w: %s", err, logs)
		}
		return nil
	}))
	assert.Equal(t, "log line from default/edge-pod/app on the edge node", strings.TrimSpace(logs))

	// exec: the command's real output and exit code.
	stdout, stderr, err := cloud.Kubectl(ctx, "exec", "edge-pod", "-c", "app", "--", "sh", "-c", "echo hello from the edge; exit 3")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "stdout %q stderr %q", stdout, stderr)
	assert.Equal(t, 3, ee.ExitCode(), stderr)
	assert.Equal(t, "hello from the edge", strings.TrimSpace(stdout))

	// The hub's namespace (and the cloud's, routed through it) has no
	// path to the node but the tunnel.
	_, derr := net.DialTimeout("tcp", nodeIP+":10250", 2*time.Second)
	require.Error(t, derr)

	// Without the node agent, a clear error, naming the missing route.
	agent.Stop()
	require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		out, err := k("logs", "edge-pod", "-c", "app")
		if err == nil {
			return fmt.Errorf("logs still work without the node agent: %s", out)
		}
		if !strings.Contains(out, "no route to "+nodeIP+":10250") {
			return fmt.Errorf("unclear error: %s", out)
		}
		return nil
	}))
}
