package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// Edge topology: a cloud kube-apiserver whose "cluster" egress goes to the
// edge site's own CONNECT Unix socket (--connect-socket-dir) reaches a
// kubelet on an edge node that accepts no inbound connection, through the
// node-mode agent there. The socket names the site, so the node's address
// is looked up among that site's agents only.
func TestEgressSelectorReachesEdgeKubelet(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	edge := e.members["m2"]
	const nodeIP, nodeName = "10.252.2.1", "edge-node-1"
	h := startSocketHub(t, e)
	// The site's own agent, besides the node's: without the node agent
	// the hub knows the cluster but has no route to the node.
	site, err := harness.StartAgent(ctx, h.Hub, edge, harness.AgentConfig{Binary: e.agentBin, Name: "agent-m2-egress", Cluster: "m2"})
	require.NoError(t, err)
	t.Cleanup(site.Stop)

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
`, h.socket("m2"))), 0o600))
	cloud, err := harness.StartMember(ctx, harness.MemberConfig{
		Name: "cloud", Index: 43, Dir: filepath.Join(dir, "cloud"),
		APIServerArgs: []string{"--egress-selector-config-file=" + egress},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cloud.Stop() })

	// The edge node: an address in the site, the test kubelet on it (its
	// certificate from the cloud's CA, which the cloud API server trusts),
	// and a node agent.
	out, err := edge.Netns.Command(ctx, "ip", "addr", "add", nodeIP+"/32", "dev", "lo").CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() {
		_ = edge.Netns.Command(context.Background(), "ip", "addr", "del", nodeIP+"/32", "dev", "lo").Run()
	})
	bin, err := harness.TestKubeletBinary(ctx)
	require.NoError(t, err)
	kubelet, err := harness.StartKubelet(ctx, bin, edge.Netns, cloud.CA, cloud.CAFile, nodeName, nodeIP, filepath.Join(dir, "kubelet"))
	require.NoError(t, err)
	t.Cleanup(kubelet.Proc.Stop)
	require.NoError(t, os.WriteFile(filepath.Join(kubelet.LogDir, "default_edge-pod_app.log"),
		[]byte("log line from default/edge-pod/app on the edge node\n"), 0o644))
	agent, err := harness.StartAgent(ctx, h.Hub, edge, harness.AgentConfig{
		Binary: e.agentBin, Name: "agent-" + nodeName, Cluster: "m2",
		Args: []string{"--node-name", nodeName, "--node-addresses", nodeIP},
	})
	require.NoError(t, err)
	t.Cleanup(agent.Stop)
	k := func(args ...string) (string, error) {
		stdout, stderr, err := cloud.Kubectl(ctx, args...)
		return stdout + stderr, err
	}
	objects := filepath.Join(cloud.Dir, "edge.yaml")
	require.NoError(t, os.WriteFile(objects, []byte(`apiVersion: v1
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
	require.NoError(t, cloud.RegisterNode(ctx, kubelet))

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
