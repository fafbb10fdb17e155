package nodes

// The edge scenario on real nodes (issue 13, items 3 and 5): a "cloud"
// cluster whose only node sits in an edge namespace that refuses inbound
// connections. The cloud API server reaches that node's kubelet (logs,
// exec) only through its egress selector: HTTP CONNECT over TLS to the
// hub's CONNECT front end, which routes the node's address to the agent
// DaemonSet Pod on that node, which dials the kubelet.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"backhaul.io/backhaul/test/harness"
)

const (
	// edgeRoleLabel marks and taints the edge node, as edge pools are;
	// deploy/agent's DaemonSet tolerates the taint.
	edgeRoleLabel = "node-role.kubernetes.io/edge"
	edgePod       = "edge-app"
	edgePodLine   = "hello from " + edgePod + " on the edge node"
	edgeWait      = 4 * time.Minute
)

// edgeSite is the cloud cluster and its edge node.
type edgeSite struct {
	cloud *harness.Member
	node  *harness.Node
	// egressUser is the identity of the cloud API server's client
	// certificate at the hub's CONNECT front end.
	egressUser string
}

// TestEdgeKubeletThroughHub: a cloud API server whose edge node accepts
// no inbound connection runs `kubectl logs` and `kubectl exec` against a
// real container there, through egress selector → hub CONNECT (TCP, mutual
// TLS) → agent DaemonSet Pod on the node → kubelet; the agent, onboarded
// with --mode daemonset, runs on the node's host network and the cluster
// reports Connected and Ready.
func TestEdgeKubeletThroughHub(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s := e.startEdgeSite(ctx, t)
	k := func(args ...string) (string, error) {
		stdout, stderr, err := s.cloud.Kubectl(ctx, args...)
		return stdout + stderr, err
	}

	// The agent DaemonSet Pod runs on the edge node, on its host network,
	// Ready, and the hub reports the cluster connected and ready.
	t.Run("AgentDaemonSet", func(t *testing.T) {
		out, err := k("-n", ns, "get", "daemonset,pods", "-l", "app.kubernetes.io/name=backhaul-agent", "-o", "json")
		require.NoError(t, err, out)
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &l))
		var pods []corev1.Pod
		kinds := map[string]int{}
		for _, raw := range l.Items {
			var meta struct{ Kind string }
			require.NoError(t, json.Unmarshal(raw, &meta))
			kinds[meta.Kind]++
			if meta.Kind == "Pod" {
				var p corev1.Pod
				require.NoError(t, json.Unmarshal(raw, &p))
				pods = append(pods, p)
			}
		}
		assert.Equal(t, map[string]int{"DaemonSet": 1, "Pod": 1}, kinds, "onboard.sh --mode daemonset installs the DaemonSet only")
		require.Len(t, pods, 1)
		p := pods[0]
		assert.Equal(t, s.node.Name, p.Spec.NodeName)
		assert.True(t, p.Spec.HostNetwork, "the DaemonSet agent uses the node's network")
		assert.Equal(t, corev1.PodRunning, p.Status.Phase)
		assert.Equal(t, s.node.IP.String(), p.Status.PodIP, "on the host network the Pod has the node's address")
		require.Len(t, p.Status.ContainerStatuses, 1)
		assert.True(t, p.Status.ContainerStatuses[0].Ready, "agent /readyz follows the tunnel")
		assert.Equal(t, "True", e.clusterCondition(ctx, s.cloud.Name, "TunnelConnected"))
		assert.Equal(t, "True", e.clusterCondition(ctx, s.cloud.Name, "Ready"))
	})

	// Nothing outside the edge namespace reaches the kubelet directly:
	// neither the root namespace nor the cloud API server's.
	t.Run("KubeletUnreachableDirectly", func(t *testing.T) {
		addr := net.JoinHostPort(s.node.IP.String(), "10250")
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "dial %s from the root namespace", addr)
		out, err := s.cloud.Netns.Command(ctx, "curl", "-sk", "--max-time", "3", "https://"+addr+"/healthz").CombinedOutput()
		require.Error(t, err, "curl %s from the cloud namespace: %s", addr, out)
	})

	// logs and exec through the cloud API server, the only path being
	// the hub: the node's agent counts the kubelet streams it carried.
	t.Run("LogsAndExec", func(t *testing.T) {
		before := s.agentTCPStreams(ctx, t)
		var logs string
		err := harness.WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
			var err error
			if logs, err = k("logs", edgePod, "-c", "app"); err != nil {
				return fmt.Errorf("%w: %s", err, logs)
			}
			return nil
		})
		require.NoError(t, err, s.diagnostics(ctx))
		assert.Equal(t, edgePodLine, strings.TrimSpace(logs))

		// exec: the command's output, from inside the container, and its
		// exit code.
		stdout, stderr, err := s.cloud.Kubectl(ctx, "exec", edgePod, "-c", "app", "--",
			"sh", "-c", "echo exec in $(hostname) as $(id -u); cat /proc/1/cmdline | tr '\\0' ' '; exit 3")
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "stdout %q stderr %q", stdout, stderr)
		assert.Equal(t, 3, ee.ExitCode(), stderr)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		require.Len(t, lines, 2, stdout)
		assert.Equal(t, "exec in "+edgePod+" as 0", lines[0])
		assert.Contains(t, lines[1], "sleep 3600", "PID 1 is the Pod's container process")

		// exec with stdin.
		stdout, stderr, err = s.cloud.Kubectl(ctx, "exec", "-i", edgePod, "-c", "app", "--", "sh", "-c", "wc -c")
		require.NoError(t, err, stderr)
		assert.Equal(t, "0", strings.TrimSpace(stdout))

		after := s.agentTCPStreams(ctx, t)
		assert.GreaterOrEqual(t, after-before, 3.0, "the edge agent dialled the kubelet for logs and both execs (tcp streams %v → %v)", before, after)
		for _, ln := range s.apiserverEgressDials(ctx, t) {
			t.Logf("cloud API server: %s", ln)
		}
	})

	// With the hub's CONNECT load balancer cut, the cloud API server loses
	// the kubelet (logs fail) while the Pod keeps running; restored, logs
	// work again.
	t.Run("CutConnect", func(t *testing.T) {
		e.lbConnect.Cut()
		restored := false
		restore := func() {
			if !restored {
				restored = true
				e.lbConnect.Restore()
			}
		}
		defer restore()
		out, err := k("logs", edgePod, "-c", "app", "--request-timeout=60s")
		require.Error(t, err, "logs with the CONNECT front end cut: %s", out)
		t.Logf("with the CONNECT load balancer cut: %s", strings.TrimSpace(out))
		_, stderr, err := s.cloud.Kubectl(ctx, "exec", edgePod, "-c", "app", "--request-timeout=60s", "--", "true")
		require.Error(t, err, "exec with the CONNECT front end cut")
		t.Logf("exec with the CONNECT load balancer cut: %s", strings.TrimSpace(stderr))

		// The cut is only between the cloud API server and the hub's
		// CONNECT port: the agent's tunnel stays up, and the kubelet
		// still reports the Pod, running and ready.
		assert.Equal(t, "True", e.clusterCondition(ctx, s.cloud.Name, "TunnelConnected"))
		out, err = k("get", "pod", edgePod, "-o", `jsonpath={.status.phase} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}`)
		require.NoError(t, err, out)
		assert.Equal(t, "Running true 0", out)
		restore()

		var logs string
		err = harness.WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
			if logs, err = k("logs", edgePod, "-c", "app"); err != nil {
				return fmt.Errorf("%w: %s", err, logs)
			}
			return nil
		})
		require.NoError(t, err, "logs after the CONNECT load balancer is restored")
		assert.Equal(t, edgePodLine, strings.TrimSpace(logs))
	})
}

// startEdgeSite starts the cloud cluster and its edge node, gives the
// cloud API server a client certificate the hub's CONNECT front end
// accepts, onboards the cloud with the agent DaemonSet and runs a busybox
// Pod on the edge node. Everything is undone in t.Cleanup.
func (e *environment) startEdgeSite(ctx context.Context, t *testing.T) *edgeSite {
	t.Helper()
	dir := filepath.Join(e.dir, "edge")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	cloudName := e.name("cloud")
	s := &edgeSite{egressUser: cloudName + "-apiserver-egress"}

	// kube-apiserver's egress selector sends no Proxy-Authorization; over
	// TCP its only credential is a client certificate, which the hub
	// accepts from its --client-ca-file (installHub); the caller is granted
	// clusters/proxy on the cloud cluster.
	clientCert, clientKey, err := e.clientCA.Client("cloud-egress", s.egressUser, nil)
	require.NoError(t, err)
	rbac := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: %[1]s}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], resourceNames: [%[2]s], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %[1]s}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: %[3]s}]
`, s.egressUser, cloudName, s.egressUser)
	out, err := e.hostKubectl(ctx, rbac, "apply", "-f", "-")
	require.NoError(t, err, out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := e.hostKubectl(ctx, "", "delete", "clusterrolebinding,clusterrole", s.egressUser, "--ignore-not-found"); err != nil {
			t.Errorf("delete the egress caller's RBAC: %v: %s", err, out)
		}
	})

	egress := filepath.Join(dir, "egress.yaml")
	require.NoError(t, os.WriteFile(egress, fmt.Appendf(nil, `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      tcp:
        url: https://%s
        tlsConfig:
          caBundle: %s
          clientCert: %s
          clientKey: %s
`, e.lbConnect.Addr, e.hubCAFile, clientCert, clientKey), 0o600))

	// The edge namespace outlives the node in it: closed after the cloud
	// (and so the node) stops.
	edgeNetns, err := harness.NewNetns(harness.NetnsPrefix+e.name("edge"), e.base+3)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := edgeNetns.Close(); err != nil {
			t.Errorf("close the edge namespace: %v", err)
		}
	})
	// The edge site reaches the cloud API server through a load balancer
	// on its own root-namespace address (as agents reach the hub): the
	// machine's firewall may not forward between namespaces (see
	// harness.SharedEtcd). The API server advertises that address, so the
	// kubernetes Service (the agent's in-cluster config) leads there; the
	// kubelet and kube-proxy dial the member's ExternalURL, which the
	// edge namespace translates to it.
	var apiLB *harness.Forwarder
	t.Cleanup(func() {
		if apiLB != nil {
			_ = apiLB.Close()
		}
	})
	s.cloud, err = harness.StartMember(ctx, harness.MemberConfig{
		Name: cloudName, Index: e.base + 2, Dir: filepath.Join(dir, "cloud"),
		APIServerArgs: slices.Concat(apiServerArgs, []string{
			"--egress-selector-config-file=" + egress,
			"--advertise-address=" + edgeNetns.HostIP.String(),
		}),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := s.cloud.Stop(); err != nil {
			t.Errorf("stop the cloud cluster: %v", err)
		}
	})
	require.NoError(t, s.cloud.Netns.AllowInbound(harness.APIServerPort))
	lbAddr := net.JoinHostPort(edgeNetns.HostIP.String(), strconv.Itoa(harness.APIServerPort))
	apiLB, err = harness.NewForwarderOn(lbAddr, net.JoinHostPort(s.cloud.Netns.NSIP.String(), strconv.Itoa(harness.APIServerPort)))
	require.NoError(t, err)
	nat := fmt.Sprintf(`table ip backhaul_e2e_edge {
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr %s tcp dport %d dnat to %s
	}
}
`, s.cloud.Netns.NSIP, harness.APIServerPort, lbAddr)
	cmd := edgeNetns.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nat)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "edge namespace NAT: %s", b)
	require.NoError(t, s.cloud.StartControlPlane(ctx))
	// node-role.kubernetes.io/ labels are not the kubelet's to set
	// (NodeRestriction); the cluster's admin adds it once it registers.
	s.node, err = harness.StartNode(ctx, harness.NodeConfig{
		Name: e.name("edge") + "-node", Index: e.base + 3, Member: s.cloud, Netns: edgeNetns,
		Dir: filepath.Join(dir, "edge-node"), Images: []string{e.imageArchive},
		Labels: map[string]string{"node.kubernetes.io/edge-site": e.name("edge")},
		Taints: []string{edgeRoleLabel + ":NoSchedule"},
	})
	require.NoError(t, err)
	_, stderr, err := s.cloud.Kubectl(ctx, "label", "node", s.node.Name, edgeRoleLabel+"=")
	require.NoError(t, err, stderr)

	// Host networking needs a privileged namespace (docs/install.md).
	_, stderr, err = s.cloud.Kubectl(ctx, "create", "namespace", ns)
	require.NoError(t, err, stderr)
	_, stderr, err = s.cloud.Kubectl(ctx, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged")
	require.NoError(t, err, stderr)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := e.ctl(ctx, "cluster", "remove", cloudName, "--wait", "--ignore-not-found"); err != nil {
			t.Errorf("remove cluster %s: %v: %s", cloudName, err, out)
		}
	})
	_, err = e.onboard(ctx, s.cloud, "daemonset")
	require.NoError(t, err)
	// onboard.sh returns once the hub sees the tunnel; the Pod's
	// readiness probe follows within its period.
	_, stderr, err = s.cloud.Kubectl(ctx, "-n", ns, "rollout", "status", "daemonset/backhaul-agent", "--timeout=2m")
	require.NoError(t, err, stderr)
	err = harness.WaitFor(ctx, edgeWait, 2*time.Second, func() error {
		if c := e.clusterCondition(ctx, cloudName, "Ready"); c != "True" {
			return &condErr{"Ready", c}
		}
		return nil
	})
	require.NoError(t, err)

	pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default}
spec:
  automountServiceAccountToken: false
  nodeSelector: {%[2]s: ""}
  tolerations: [{key: %[2]s, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %[3]s
    imagePullPolicy: Never
    command: [sh, -c, 'echo "%[4]s"; exec sleep 3600']
`, edgePod, edgeRoleLabel, busybox, edgePodLine)
	podFile := filepath.Join(dir, "pod.yaml")
	require.NoError(t, os.WriteFile(podFile, []byte(pod), 0o644))
	_, stderr, err = s.cloud.Kubectl(ctx, "apply", "-f", podFile)
	require.NoError(t, err, stderr)
	_, stderr, err = s.cloud.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/"+edgePod, "--timeout=3m")
	require.NoError(t, err, stderr)
	return s
}

// agentTCPStreams is the edge agent's count of tcp streams (node
// addresses) it opened, read from its metrics port on the node.
func (s *edgeSite) agentTCPStreams(ctx context.Context, t *testing.T) float64 {
	t.Helper()
	out, err := s.node.Netns.Command(ctx, "curl", "-sS", "--max-time", "10", "http://127.0.0.1:9090/metrics").Output()
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(string(out)))
	require.NoError(t, err)
	var n float64
	for _, m := range families["backhaul_agent_streams_total"].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["kind"] == "tcp" && l["code"] == "ok" {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// apiserverEgressDials are the cloud API server's egress dialer series,
// for the log.
func (s *edgeSite) apiserverEgressDials(ctx context.Context, t *testing.T) []string {
	t.Helper()
	out, _, err := s.cloud.Kubectl(ctx, "get", "--raw", "/metrics")
	if err != nil {
		return []string{err.Error()}
	}
	var lines []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "apiserver_egress_dialer_dial_start_total") || strings.HasPrefix(l, "apiserver_egress_dialer_dial_failure_count") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// diagnostics are the agent's and the cloud API server's recent logs, for
// a failure message.
func (s *edgeSite) diagnostics(ctx context.Context) string {
	agent, stderr, err := s.cloud.Kubectl(ctx, "-n", ns, "logs", "-l", "app.kubernetes.io/name=backhaul-agent", "--tail=30")
	if err != nil {
		agent = stderr
	}
	return fmt.Sprintf("--- agent ---\n%s\n%s", agent, s.cloud.Logs())
}
