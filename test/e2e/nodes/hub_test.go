package nodes

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// podList is the part of a PodList these tests read.
type podList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			NodeName    string `json:"nodeName"`
			HostNetwork bool   `json:"hostNetwork"`
		} `json:"spec"`
		Status struct {
			Phase      string `json:"phase"`
			PodIP      string `json:"podIP"`
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
			ContainerStatuses []struct {
				Ready        bool `json:"ready"`
				RestartCount int  `json:"restartCount"`
				State        struct {
					Running *struct{} `json:"running"`
				} `json:"state"`
			} `json:"containerStatuses"`
		} `json:"status"`
	} `json:"items"`
}

func parsePods(t testing.TB, out string) podList {
	t.Helper()
	var l podList
	require.NoError(t, json.Unmarshal([]byte(out), &l), out)
	return l
}

// TestHubRunsAsPods: `kubectl apply -k deploy/hub` on a real node gives
// three Running, Ready hub Pods (as uid 65532, read-only root, no
// capabilities: what deploy/hub asks for, enforced by runc), the
// Service reaches them, backhaulctl works against the host cluster, and
// an agent Pod in another cluster dials in through the Service.
func TestHubRunsAsPods(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, err := e.hostKubectl(ctx, "", "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=backhaul-hub", "-o", "json")
	require.NoError(t, err, out)
	pods := parsePods(t, out)
	require.Len(t, pods.Items, 3)
	for _, p := range pods.Items {
		assert.Equal(t, "Running", p.Status.Phase, p.Metadata.Name)
		assert.Equal(t, e.hostNode.Name, p.Spec.NodeName)
		require.Len(t, p.Status.ContainerStatuses, 1)
		assert.True(t, p.Status.ContainerStatuses[0].Ready, p.Metadata.Name)
		assert.Zero(t, p.Status.ContainerStatuses[0].RestartCount, p.Metadata.Name)
	}

	// The container runs as deploy/hub says: runc applied it.
	name := pods.Items[0].Metadata.Name
	pid, err := e.hostKubectl(ctx, "", "-n", ns, "get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	require.NoError(t, err, pid)
	status := containerProcStatus(t, e.hostNode, strings.TrimPrefix(pid, "containerd://"))
	assert.Contains(t, status, "Uid:\t65532\t65532\t65532\t65532", "hub runs as uid 65532")
	assert.Contains(t, status, "CapEff:\t0000000000000000", "hub has no capabilities")

	// The Service has every replica behind it.
	out, err = e.hostKubectl(ctx, "", "-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name=backhaul-hub",
		"-o", "jsonpath={range .items[*].endpoints[*]}{.conditions.ready}{\"\\n\"}{end}")
	require.NoError(t, err, out)
	assert.Equal(t, 3, strings.Count(out, "true"), out)

	// backhaulctl against the host cluster.
	out, err = e.ctl(ctx, "cluster", "list")
	require.NoError(t, err, out)
	assert.Contains(t, out, e.m1.Name)

	// The member's agent Pod came in through the load balancer and the
	// NodePort: the cluster is connected and answers through the hub.
	// (onboard.sh saw the session at once; the leader writes the
	// condition in its next status batch.)
	require.NoError(t, harness.WaitFor(ctx, time.Minute, time.Second, func() error {
		if s := e.clusterCondition(ctx, e.m1.Name, "TunnelConnected"); s != "True" {
			return &condErr{"TunnelConnected", s}
		}
		return nil
	}))
	out, err = e.kubectl(ctx, t, e.m1.Name, "get", "nodes", "-o", "name")
	require.NoError(t, err, out)
	assert.Equal(t, "node/"+e.m1Node.Name, strings.TrimSpace(out))
}

// TestAgentDeploymentOnboarded: onboard.sh installs the agent as a
// Deployment whose Pods run on the member's node, are Ready, and the
// Cluster reports Connected and Ready.
func TestAgentDeploymentOnboarded(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// onboard.sh returns once one agent has a session; the Pods turn
	// Ready at their next readiness probe.
	out, _, err := e.m1.Kubectl(ctx, "-n", ns, "wait", "pods", "-l", "app.kubernetes.io/name=backhaul-agent",
		"--for=condition=Ready", "--timeout=90s")
	require.NoError(t, err, out)
	out, _, err = e.m1.Kubectl(ctx, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=backhaul-agent", "-o", "json")
	require.NoError(t, err, out)
	pods := parsePods(t, out)
	require.Len(t, pods.Items, 2, "deploy/agent/overlays/deployment runs two agents")
	for _, p := range pods.Items {
		assert.Equal(t, "Running", p.Status.Phase, p.Metadata.Name)
		assert.Equal(t, e.m1Node.Name, p.Spec.NodeName)
		assert.False(t, p.Spec.HostNetwork, "the Deployment agent uses the Pod network")
		require.Len(t, p.Status.ContainerStatuses, 1)
		assert.True(t, p.Status.ContainerStatuses[0].Ready, p.Metadata.Name)
	}
	err = harness.WaitFor(ctx, time.Minute, time.Second, func() error {
		if s := e.clusterCondition(ctx, e.m1.Name, "Ready"); s != "True" {
			return &condErr{"Ready", s}
		}
		return nil
	})
	require.NoError(t, err)
	assert.Contains(t, e.onboardOut[e.m1.Name], "connected")
}

type condErr struct{ typ, status string }

func (c *condErr) Error() string { return c.typ + "=" + c.status }

// containerProcStatus is /proc/PID/status of container id's main
// process on node, as the node's containerd reports it.
func containerProcStatus(t testing.TB, n *harness.Node, id string) string {
	t.Helper()
	pid, err := n.TaskPID(context.Background(), id)
	require.NoError(t, err)
	b, err := os.ReadFile("/proc/" + pid + "/status")
	require.NoError(t, err)
	return string(b)
}
