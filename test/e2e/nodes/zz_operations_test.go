package nodes

// Operations on the Pods of the hub and the agents (issue 13, item 6): a
// rollout of the hub, the deletion of a hub replica and of an agent, and
// an agent cut off from the hub. Each test runs a client loop through the
// hub while it works and logs what it measured on "figure:" lines. The
// file sorts last because it replaces the hub's Pods; each test leaves
// three hub replicas ready and m1 connected.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/test/harness"
)

const (
	opsHubSelector   = "app.kubernetes.io/name=backhaul-hub"
	opsAgentSelector = "app.kubernetes.io/name=backhaul-agent"
	opsHubDeployment = "backhaul-hub"
	opsAgentDeploy   = "backhaul-agent"
	// opsHubConnections is the agents' --hub-connections (the default;
	// deploy/agent does not set it): sessions to distinct replicas.
	opsHubConnections = 2
	// Cadences of the client loop: a GET /version every 100 ms on a new
	// connection and on a kept-alive one, a ConfigMap created every 500 ms.
	opsGetEvery   = 100 * time.Millisecond
	opsWriteEvery = 500 * time.Millisecond
	// opsCallTimeout bounds one request; a hub that takes longer has
	// failed the caller.
	opsCallTimeout = 15 * time.Second
	// opsCutTable is the nftables table that cuts m1 off the hub.
	opsCutTable = "backhaul_ops_cut"
)

var (
	opsClustersGVR = schema.GroupVersionResource{Group: "backhaul.io", Version: "v1alpha1", Resource: "clusters"}
	opsReplicasGVR = schema.GroupVersionResource{Group: "backhaul.io", Version: "v1alpha1", Resource: "hubreplicas"}
)

// TestOpsRolloutRestartHub: `kubectl rollout restart deployment/backhaul-hub`
// completes while a client loop through the hub keeps working: no GET on a
// new connection, none on a kept-alive one, no create fails; the watch
// each old replica carried ends cleanly and is taken up again through
// another, and it misses no ConfigMap. No agent is ever left without a
// session: it lets a drained one go once its replacement is up.
func TestOpsRolloutRestartHub(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	h := e.opsHost(t)
	e.opsRestoreOnCleanup(t, h)
	agents := e.opsSettle(ctx, t, h)

	before, err := h.hubPods(ctx)
	require.NoError(t, err)
	logs := e.opsFollowLogs(t, h, "rollout")
	at := &opsRecorder{T: t}
	sessions := e.opsSampleAgents(ctx, t)
	load := e.opsStartLoad(ctx, t, "rollout")
	require.NoError(at, load.waitWatching(ctx))
	opsSleep(ctx, 3*time.Second)

	began := time.Now()
	out, err := e.hostKubectl(ctx, "", "-n", ns, "rollout", "restart", "deployment/"+opsHubDeployment)
	require.NoError(at, err, out)
	out, err = e.hostKubectl(ctx, "", "-n", ns, "rollout", "status", "deployment/"+opsHubDeployment, "--timeout=8m")
	rolledOut := time.Since(began)
	require.NoError(at, err, out)
	// rollout status returns once the new Pods are available; the last
	// old one may still be draining. The load goes on until it is gone.
	err = harness.WaitFor(ctx, 3*time.Minute, 250*time.Millisecond, func() error {
		pods, err := h.hubPods(ctx)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if opsHasPod(before, p.Name) {
				return fmt.Errorf("old replica %s still there (%s)", p.Name, opsPodState(&p))
			}
		}
		return nil
	})
	require.NoError(at, err)
	oldGone := time.Since(began)
	opsSleep(ctx, 3*time.Second)
	missing := load.stop(ctx)
	failed := load.report(at.T, "rollout-restart")
	alone := sessions.report(at.T, "rollout-restart")

	after, err := h.hubPods(ctx)
	require.NoError(at, err)
	var names []string
	for _, p := range after {
		names = append(names, p.Name)
	}
	w := load.watchFigures()
	opsFigure(t, "rollout-restart", "rollout_status_ms", rolledOut.Milliseconds(), "old_pods_gone_ms", oldGone.Milliseconds(),
		"failed_requests", len(failed), "watch_opened", w.opened, "watch_clean_ends", w.cleanEnds, "watch_errors", len(w.errs),
		"configmaps_created", w.created, "configmaps_missed", len(missing))
	assert.Len(at, after, 3, "three hub replicas after the rollout: %v", names)
	for _, p := range after {
		assert.False(at, opsHasPod(before, p.Name), "%s was not replaced", p.Name)
	}
	assert.Empty(at, failed, "requests through the hub failed during the rollout")
	assert.Empty(at, w.errs, "the watch ended with an error a client would see")
	assert.Empty(at, missing, "the watch missed ConfigMaps")
	assert.GreaterOrEqual(at, w.opened, 2, "the watch an old replica carried was taken up again through another")
	assert.Empty(at, alone, "an agent lets go of a drained session only once its replacement is up (docs/ha.md)")
	require.NoError(at, e.opsWaitSpread(ctx, h, agents, 3*time.Minute), "agents hold %d sessions each again", opsHubConnections)
	if t.Failed() {
		logs.dump(at)
	}
}

// TestOpsDeleteHubPod: `kubectl delete pod` of the hub replica holding
// most of m1's sessions. m1 is served throughout (the agents' other
// sessions carry it; no request of the client loop fails; no agent is
// left without a session), the Deployment is back to three ready
// replicas, and the agents hold two sessions each again.
func TestOpsDeleteHubPod(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h := e.opsHost(t)
	e.opsRestoreOnCleanup(t, h)
	agents := e.opsSettle(ctx, t, h)

	reps, err := h.replicas(ctx)
	require.NoError(t, err)
	victim, held := "", int32(0)
	for _, r := range reps {
		for _, c := range r.Status.Clusters {
			if c.Name == e.m1.Name && c.Sessions > held {
				victim, held = r.Name, c.Sessions
			}
		}
	}
	require.NotEmpty(t, victim, "no hub replica holds a session of %s", e.m1.Name)
	cl, err := h.cluster(ctx, e.m1.Name)
	require.NoError(t, err)
	assert.Contains(t, cl.Status.HubReplicas, victim, "Cluster status names the replicas holding its sessions")
	t.Logf("deleting hub replica %s (holds %d of %s's sessions; Cluster status.hubReplicas %v)", victim, held, e.m1.Name, cl.Status.HubReplicas)

	logs := e.opsFollowLogs(t, h, "delete-hub")
	at := &opsRecorder{T: t}
	sessions := e.opsSampleAgents(ctx, t)
	load := e.opsStartLoad(ctx, t, "delete-hub")
	require.NoError(at, load.waitWatching(ctx))
	opsSleep(ctx, 2*time.Second)

	began := time.Now()
	out, err := e.hostKubectl(ctx, "", "-n", ns, "delete", "pod", victim, "--wait=false")
	require.NoError(at, err, out)
	got, err := e.opsMilestones(ctx, h, began, 5*time.Minute, []opsCheck{
		{"served", func() error { return e.opsServed(ctx, h) }},
		{"old_pod_gone", func() error { return h.podGone(ctx, victim) }},
		{"deployment_ready", func() error { return h.hubSettled(ctx) }},
		{"sessions_respread", func() error { return e.opsRespread(ctx, h, agents) }},
	})
	opsSleep(ctx, 5*time.Second) // and a while after
	load.stopAndReport(ctx, t, "delete-hub-pod")
	alone := sessions.report(at.T, "delete-hub-pod")
	require.NoError(at, err)
	opsFigure(t, "delete-hub-pod", "replica", victim, "sessions_held", held,
		"connected_throughout", got.connectedThroughout, "served_ms", got.at["served"].Milliseconds(),
		"old_pod_gone_ms", got.at["old_pod_gone"].Milliseconds(), "deployment_3_ready_ms", got.at["deployment_ready"].Milliseconds(),
		"sessions_respread_ms", got.at["sessions_respread"].Milliseconds())
	assert.True(at, got.connectedThroughout, "%s stays TunnelConnected: its agents' other sessions carry it", e.m1.Name)
	assert.Empty(at, alone, "an agent lets go of a drained session only once its replacement is up (docs/ha.md)")
	if t.Failed() {
		logs.dump(at)
	}
}

// TestOpsDeleteAgentPod: `kubectl delete pod` of one of m1's two agents.
// m1 is served again (by the other agent's sessions), the Deployment has
// its replicas ready again, and the new agent holds its sessions.
func TestOpsDeleteAgentPod(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h := e.opsHost(t)
	e.opsRestoreOnCleanup(t, h)
	agents := e.opsSettle(ctx, t, h)
	require.GreaterOrEqual(t, agents, int32(2), "the Deployment agent runs two replicas")

	pods, err := e.opsAgentPods(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, pods)
	victim := pods[0].Name

	logs := e.opsFollowLogs(t, h, "delete-agent")
	at := &opsRecorder{T: t}
	load := e.opsStartLoad(ctx, t, "delete-agent")
	require.NoError(at, load.waitWatching(ctx))
	opsSleep(ctx, 2*time.Second)

	began := time.Now()
	_, stderr, err := e.m1.Kubectl(ctx, "-n", ns, "delete", "pod", victim, "--wait=false")
	require.NoError(at, err, stderr)
	got, err := e.opsMilestones(ctx, h, began, 5*time.Minute, []opsCheck{
		{"served", func() error { return e.opsServed(ctx, h) }},
		{"old_pod_gone", func() error { return e.opsAgentGone(ctx, victim) }},
		{"deployment_ready", func() error { return e.opsAgentsSettled(ctx) }},
		{"sessions_respread", func() error {
			if err := e.opsAgentGone(ctx, victim); err != nil {
				return err // the directory counts its sessions until it is
			}
			return e.opsRespread(ctx, h, agents)
		}},
	})
	opsSleep(ctx, 5*time.Second) // and a while after
	failed := load.stopAndReport(ctx, t, "delete-agent-pod")
	require.NoError(at, err)
	opsFigure(t, "delete-agent-pod", "agent", victim, "connected_throughout", got.connectedThroughout,
		"served_ms", got.at["served"].Milliseconds(), "old_pod_gone_ms", got.at["old_pod_gone"].Milliseconds(),
		"deployment_ready_ms", got.at["deployment_ready"].Milliseconds(), "sessions_respread_ms", got.at["sessions_respread"].Milliseconds(),
		"failed_requests", len(failed))
	assert.True(at, got.connectedThroughout, "%s stays TunnelConnected: the other agent's sessions carry it", e.m1.Name)
	if t.Failed() {
		logs.dump(at)
	}
}

// TestOpsAgentCutOffStaysAlive cuts m1's agents off the hub (an nftables
// rule in m1's namespace drops what goes to the load balancer's port):
// the agent Pods turn not ready, but the kubelet does not restart them
// over more than three liveness periods (liveness is the process, not
// the tunnel: docs/operations.md). Restored, they turn ready and m1 is
// served again.
func TestOpsAgentCutOffStaysAlive(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	h := e.opsHost(t)
	e.opsRestoreOnCleanup(t, h)
	e.opsSettle(ctx, t, h)

	dep, err := e.opsAgentDeployment(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, dep.Spec.Template.Spec.Containers)
	c := dep.Spec.Template.Spec.Containers[0]
	require.NotNil(t, c.LivenessProbe, "the agent has a liveness probe")
	require.NotNil(t, c.ReadinessProbe, "the agent has a readiness probe")
	require.NotNil(t, c.LivenessProbe.HTTPGet)
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	period := time.Duration(c.LivenessProbe.PeriodSeconds) * time.Second
	threshold := c.LivenessProbe.FailureThreshold
	// The kubelet restarts after threshold failures in a row; hold the
	// cut, not ready, for one period more than that (and more than three).
	hold := time.Duration(max(threshold, 3)+1) * period
	t.Logf("agent probes: liveness %s every %v, restart after %d failures; readiness %s every %ds, %d failures; holding %v",
		c.LivenessProbe.HTTPGet.Path, period, threshold, c.ReadinessProbe.HTTPGet.Path,
		c.ReadinessProbe.PeriodSeconds, c.ReadinessProbe.FailureThreshold, hold)

	pods, err := e.opsAgentPods(ctx)
	require.NoError(t, err)
	restarts := map[string]int32{}
	for _, p := range pods {
		restarts[p.Name] = opsRestarts(&p)
	}
	probeEventsBefore, err := e.opsProbeFailures(ctx, restarts)
	require.NoError(t, err)
	logs := e.opsFollowLogs(t, h, "cut")
	at := &opsRecorder{T: t}

	cutAt := time.Now()
	e.opsCut(ctx, t)
	got, err := e.opsMilestones(ctx, h, cutAt, 4*time.Minute, []opsCheck{
		{"agents_not_ready", func() error { return e.opsAgentsReady(ctx, restarts, false) }},
		{"cluster_disconnected", func() error {
			cl, err := h.cluster(ctx, e.m1.Name)
			if err != nil {
				return err
			}
			if meta.IsStatusConditionTrue(cl.Status.Conditions, "TunnelConnected") {
				return errors.New("still TunnelConnected")
			}
			return nil
		}},
	})
	require.NoError(at, err)

	// Not ready, not restarted, for the whole hold.
	notReadyAt := time.Now()
	var violations []string
	for time.Since(notReadyAt) < hold && ctx.Err() == nil {
		if err := e.opsAgentsReady(ctx, restarts, false); err != nil {
			violations = append(violations, time.Now().Format("15:04:05")+" "+err.Error())
		}
		opsSleep(ctx, 2*time.Second)
	}
	held := time.Since(notReadyAt)
	probeEventsCut, err := e.opsProbeFailures(ctx, restarts)
	require.NoError(at, err)

	restoredAt := time.Now()
	require.NoError(at, e.opsUncut(ctx))
	back, err := e.opsMilestones(ctx, h, restoredAt, 5*time.Minute, []opsCheck{
		{"agents_ready", func() error { return e.opsAgentsReady(ctx, restarts, true) }},
		{"served", func() error { return e.opsServed(ctx, h) }},
	})
	require.NoError(at, err)

	opsFigure(t, "agent-cut-off", "liveness_period_s", period.Seconds(), "liveness_failure_threshold", threshold,
		"cut_to_not_ready_ms", got.at["agents_not_ready"].Milliseconds(), "cut_to_disconnected_ms", got.at["cluster_disconnected"].Milliseconds(),
		"held_not_ready_s", int(held.Seconds()), "liveness_failures", probeEventsCut.liveness-probeEventsBefore.liveness,
		"readiness_failures", probeEventsCut.readiness-probeEventsBefore.readiness,
		"restore_to_ready_ms", back.at["agents_ready"].Milliseconds(), "restore_to_served_ms", back.at["served"].Milliseconds())
	assert.Empty(at, violations, "while cut off, the agent Pods stay (not restarted, not replaced) and not ready")
	assert.Zero(at, probeEventsCut.liveness-probeEventsBefore.liveness, "the liveness probe does not follow the tunnel")
	assert.Positive(at, probeEventsCut.readiness-probeEventsBefore.readiness, "the readiness probe follows the tunnel")
	assert.NoError(at, e.opsAgentsReady(ctx, restarts, true), "the same Pods, never restarted, are ready again")
	if t.Failed() {
		logs.dump(at)
	}
}

// --- The host cluster, through client-go.

type opsHostClients struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func (e *environment) opsHost(t *testing.T) *opsHostClients {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.hostKubeconfig)
	require.NoError(t, err)
	cfg.Timeout = opsCallTimeout
	kube, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	return &opsHostClients{kube: kube, dyn: dyn}
}

func (h *opsHostClients) hubPods(ctx context.Context) ([]corev1.Pod, error) {
	l, err := h.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: opsHubSelector})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (h *opsHostClients) podGone(ctx context.Context, name string) error {
	p, err := h.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s still there (%s)", name, opsPodState(p))
}

// hubSettled: the Deployment has its replicas, all updated and ready, and
// no other (terminating) Pod.
func (h *opsHostClients) hubSettled(ctx context.Context) error {
	d, err := h.kube.AppsV1().Deployments(ns).Get(ctx, opsHubDeployment, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pods, err := h.hubPods(ctx)
	if err != nil {
		return err
	}
	return opsDeploymentSettled(d, pods)
}

func (h *opsHostClients) cluster(ctx context.Context, name string) (*v1alpha1.Cluster, error) {
	u, err := h.dyn.Resource(opsClustersGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var c v1alpha1.Cluster
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func (h *opsHostClients) replicas(ctx context.Context) ([]v1alpha1.HubReplica, error) {
	u, err := h.dyn.Resource(opsReplicasGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var l v1alpha1.HubReplicaList
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// --- m1, through kubectl in its namespace (it refuses inbound).

func (e *environment) opsMemberJSON(ctx context.Context, into any, args ...string) error {
	out, _, err := e.m1.Kubectl(ctx, append([]string{"-n", ns, "-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), into)
}

func (e *environment) opsAgentPods(ctx context.Context) ([]corev1.Pod, error) {
	var l corev1.PodList
	if err := e.opsMemberJSON(ctx, &l, "get", "pods", "-l", opsAgentSelector); err != nil {
		return nil, err
	}
	slices.SortFunc(l.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return l.Items, nil
}

func (e *environment) opsAgentDeployment(ctx context.Context) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	if err := e.opsMemberJSON(ctx, &d, "get", "deployment", opsAgentDeploy); err != nil {
		return nil, err
	}
	return &d, nil
}

func (e *environment) opsAgentGone(ctx context.Context, name string) error {
	pods, err := e.opsAgentPods(ctx)
	if err != nil {
		return err
	}
	for _, p := range pods {
		if p.Name == name {
			return fmt.Errorf("%s still there (%s)", name, opsPodState(&p))
		}
	}
	return nil
}

func (e *environment) opsAgentsSettled(ctx context.Context) error {
	d, err := e.opsAgentDeployment(ctx)
	if err != nil {
		return err
	}
	pods, err := e.opsAgentPods(ctx)
	if err != nil {
		return err
	}
	return opsDeploymentSettled(d, pods)
}

// opsAgentsReady checks that the agent Pods are exactly those of
// restarts, none restarted since, and every one ready (or, with !ready,
// not ready).
func (e *environment) opsAgentsReady(ctx context.Context, restarts map[string]int32, ready bool) error {
	pods, err := e.opsAgentPods(ctx)
	if err != nil {
		return err
	}
	var errs []error
	if len(pods) != len(restarts) {
		errs = append(errs, fmt.Errorf("%d agent Pods, want the %d there were", len(pods), len(restarts)))
	}
	for _, p := range pods {
		was, ok := restarts[p.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("new agent Pod %s (%s)", p.Name, opsPodState(&p)))
		case opsRestarts(&p) != was:
			errs = append(errs, fmt.Errorf("agent %s restarted: restartCount %d, was %d (%s)", p.Name, opsRestarts(&p), was, opsPodState(&p)))
		case opsPodReady(&p) != ready:
			errs = append(errs, fmt.Errorf("agent %s: %s", p.Name, opsPodState(&p)))
		}
	}
	return errors.Join(errs...)
}

// opsProbeCounts are the kubelet's Unhealthy events of the agent Pods.
type opsProbeCounts struct{ liveness, readiness int32 }

func (e *environment) opsProbeFailures(ctx context.Context, pods map[string]int32) (opsProbeCounts, error) {
	var l corev1.EventList
	if err := e.opsMemberJSON(ctx, &l, "get", "events", "--field-selector", "reason=Unhealthy"); err != nil {
		return opsProbeCounts{}, err
	}
	var c opsProbeCounts
	for _, ev := range l.Items {
		if _, ok := pods[ev.InvolvedObject.Name]; !ok {
			continue
		}
		n := max(ev.Count, 1)
		switch {
		case strings.HasPrefix(ev.Message, "Liveness probe failed"):
			c.liveness += n
		case strings.HasPrefix(ev.Message, "Readiness probe failed"):
			c.readiness += n
		}
	}
	return c, nil
}

// opsCut drops, in m1's namespace, every packet to the load balancer's
// tunnel port: what its agent Pods send is forwarded by the namespace
// (the node's bridge), what the node sends itself is output. The load
// balancer is shared by the suite's clusters; this cuts m1 only.
func (e *environment) opsCut(ctx context.Context, t *testing.T) {
	t.Helper()
	lb := e.host.Netns.HostIP.String()
	rules := fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip daddr %[2]s tcp dport 8443 drop
	}
	chain output {
		type filter hook output priority -10; policy accept;
		ip daddr %[2]s tcp dport 8443 drop
	}
}
`, opsCutTable, lb)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.m1.Netns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nft: %s", out)
	t.Cleanup(func() { assert.NoError(t, e.opsUncut(context.Background())) })
}

// opsUncut removes the cut; it is idempotent.
func (e *environment) opsUncut(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", e.m1.Netns.Name, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft list tables: %w: %s", err, out)
	}
	if !strings.Contains(string(out), opsCutTable) {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", e.m1.Netns.Name, "nft", "delete", "table", "inet", opsCutTable).CombinedOutput(); err != nil {
		return fmt.Errorf("nft delete table: %w: %s", err, out)
	}
	return nil
}

// --- Health of the environment.

// opsSettle waits until the environment is healthy and every agent holds
// its sessions, and returns the number of agent replicas.
func (e *environment) opsSettle(ctx context.Context, t *testing.T, h *opsHostClients) int32 {
	t.Helper()
	require.NoError(t, e.opsWaitHealthy(ctx, h, 4*time.Minute))
	d, err := e.opsAgentDeployment(ctx)
	require.NoError(t, err)
	agents := *d.Spec.Replicas
	require.NoError(t, e.opsWaitSpread(ctx, h, agents, 3*time.Minute), "agents hold %d sessions each before the test", opsHubConnections)
	return agents
}

// opsWaitHealthy waits until three hub replicas are ready, m1's agents
// are, and m1 is TunnelConnected and served through the hub.
func (e *environment) opsWaitHealthy(ctx context.Context, h *opsHostClients, timeout time.Duration) error {
	return harness.WaitFor(ctx, timeout, time.Second, func() error {
		return errors.Join(h.hubSettled(ctx), e.opsAgentsSettled(ctx), e.opsServed(ctx, h))
	})
}

// opsRestoreOnCleanup leaves the environment healthy for what runs next,
// also when the test failed.
func (e *environment) opsRestoreOnCleanup(t *testing.T, h *opsHostClients) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		assert.NoError(t, e.opsWaitHealthy(ctx, h, 5*time.Minute), "the environment is healthy again after the test")
	})
}

// opsServed: the Cluster is TunnelConnected and a GET through the hub
// answers.
func (e *environment) opsServed(ctx context.Context, h *opsHostClients) error {
	cl, err := h.cluster(ctx, e.m1.Name)
	if err != nil {
		return err
	}
	if !meta.IsStatusConditionTrue(cl.Status.Conditions, "TunnelConnected") {
		return fmt.Errorf("%s not TunnelConnected", e.m1.Name)
	}
	return e.opsGetVersion(ctx, e.opsHubClient(false))
}

// opsSpread: the live, not draining hub replicas hold opsHubConnections
// sessions of each of m1's agents (each on a distinct replica).
func (e *environment) opsSpread(ctx context.Context, h *opsHostClients, agents int32) error {
	reps, err := h.replicas(ctx)
	if err != nil {
		return err
	}
	var total int32
	var where []string
	for _, r := range reps {
		st := r.Status
		if st.Draining || st.RenewTime == nil || time.Since(st.RenewTime.Time) > time.Duration(st.LeaseDurationSeconds)*time.Second {
			continue
		}
		for _, c := range st.Clusters {
			if c.Name == e.m1.Name {
				total += c.Sessions
				where = append(where, fmt.Sprintf("%s:%d", r.Name, c.Sessions))
			}
		}
	}
	if want := agents * opsHubConnections; total != want {
		return fmt.Errorf("%s: %d sessions on live replicas (%v), want %d", e.m1.Name, total, where, want)
	}
	return nil
}

func (e *environment) opsWaitSpread(ctx context.Context, h *opsHostClients, agents int32, timeout time.Duration) error {
	return harness.WaitFor(ctx, timeout, time.Second, func() error { return e.opsRespread(ctx, h, agents) })
}

// opsRespread: every agent says it holds its sessions, and the hub's
// directory agrees.
func (e *environment) opsRespread(ctx context.Context, h *opsHostClients, agents int32) error {
	if err := e.opsAgentsHoldSessions(ctx); err != nil {
		return err
	}
	return e.opsSpread(ctx, h, agents)
}

// --- The agents' own view of their tunnel.

type opsCheck struct {
	name string
	ok   func() error
}

type opsReached struct {
	at map[string]time.Duration // since the start, by check
	// connectedThroughout: no sample saw m1 other than TunnelConnected.
	connectedThroughout bool
}

// opsMilestones polls the checks every 250 ms until each has passed once,
// recording when each first did (measured from from), and samples m1's
// TunnelConnected meanwhile.
func (e *environment) opsMilestones(ctx context.Context, h *opsHostClients, from time.Time, timeout time.Duration, checks []opsCheck) (opsReached, error) {
	r := opsReached{at: map[string]time.Duration{}, connectedThroughout: true}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := map[string]error{}
	for {
		if cl, err := h.cluster(ctx, e.m1.Name); err == nil && !meta.IsStatusConditionTrue(cl.Status.Conditions, "TunnelConnected") {
			r.connectedThroughout = false
		}
		for _, c := range checks {
			if _, done := r.at[c.name]; done {
				continue
			}
			if last[c.name] = c.ok(); last[c.name] == nil {
				r.at[c.name] = time.Since(from)
			}
		}
		if len(r.at) == len(checks) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			var errs []error
			for _, c := range checks {
				if _, done := r.at[c.name]; !done {
					errs = append(errs, fmt.Errorf("%s not reached: %w", c.name, last[c.name]))
				}
			}
			return r, errors.Join(append(errs, ctx.Err())...)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// --- The client loop.

// opsHubClient is a plain HTTP client of the hub gateway: no retries
// beyond what net/http does for an idempotent request on a connection
// the server closed while idle. Without keepAlive every request is a new
// connection, which the load balancer and the NodePort send to a replica
// of their choice, as each run of kubectl is.
func (e *environment) opsHubClient(keepAlive bool) *http.Client {
	return &http.Client{Timeout: opsCallTimeout, Transport: &http.Transport{
		TLSClientConfig:   e.opsHubTLS(),
		DisableKeepAlives: !keepAlive,
	}}
}

// opsHubTLS trusts the hub's CA.
func (e *environment) opsHubTLS() *tls.Config {
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(e.hubCAFile); err == nil {
		pool.AppendCertsFromPEM(ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func (e *environment) opsURL(path string) string {
	return e.hubURL + "/clusters/" + e.m1.Name + path
}

func (e *environment) opsDo(c *http.Client, req *http.Request, want int) ([]byte, error) {
	req.Header.Set("Authorization", "Bearer "+e.adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("status %d, body: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("status %d (want %d): %s", resp.StatusCode, want, opsTruncate(string(body), 300))
	}
	return body, nil
}

func (e *environment) opsGetVersion(ctx context.Context, c *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.opsURL("/version"), nil)
	if err != nil {
		return err
	}
	_, err = e.opsDo(c, req, http.StatusOK)
	return err
}

// opsLogs follows the logs of the hub's and m1's agents' Pods, including
// those that start later, into files, for the test to show when it
// fails (a Pod that is gone has no logs left to ask for).
type opsLogs struct {
	dir    string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	files []string
}

func (e *environment) opsFollowLogs(t *testing.T, h *opsHostClients, label string) *opsLogs {
	t.Helper()
	l := &opsLogs{dir: filepath.Join(e.dir, "ops", label)}
	require.NoError(t, os.MkdirAll(l.dir, 0o755))
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	followed := map[string]bool{}
	poll := func() {
		hub, _ := h.hubPods(ctx)
		agents, _ := e.opsAgentPods(ctx)
		for _, p := range append(hub, agents...) {
			if followed[p.Name] || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Running == nil {
				continue
			}
			followed[p.Name] = true
			args := []string{"-n", ns, "logs", "-f", "--timestamps", "pod/" + p.Name}
			var cmd *exec.Cmd
			if slices.ContainsFunc(hub, func(q corev1.Pod) bool { return q.Name == p.Name }) {
				cmd = exec.CommandContext(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", e.hostKubeconfig}, args...)...)
			} else {
				cmd = e.m1.Netns.Command(ctx, e.bins.Kubectl, append([]string{"--kubeconfig=" + e.m1.AdminKubeconfig}, args...)...)
			}
			f, err := os.Create(filepath.Join(l.dir, p.Name+".log"))
			if err != nil {
				continue
			}
			cmd.Stdout, cmd.Stderr = f, f
			if err := cmd.Start(); err != nil {
				f.Close()
				continue
			}
			l.mu.Lock()
			l.files = append(l.files, f.Name())
			l.mu.Unlock()
			l.wg.Go(func() { _ = cmd.Wait(); f.Close() })
		}
	}
	poll()
	l.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				poll()
			}
		}
	})
	t.Cleanup(func() { cancel(); l.wg.Wait() })
	return l
}

// dump logs the last lines of every Pod's log.
func (l *opsLogs) dump(t *opsRecorder) {
	t.Helper()
	l.mu.Lock()
	files := slices.Clone(l.files)
	l.mu.Unlock()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
		tail := lines[max(0, len(lines)-40):]
		t.Logf("--- %s (last %d of %d lines):\n%s", filepath.Base(f), len(tail), len(lines), bytes.Join(tail, []byte("\n")))
	}
	t.Logf("the test failed because (repeated after the logs):\n%s", strings.Join(t.msgs, "\n"))
}

// opsRecorder is t for an operations test's checks: it keeps what they
// report, so dump can repeat it after the logs (CI shows only the tail of
// a failed run's output).
type opsRecorder struct {
	*testing.T
	msgs []string
}

func (r *opsRecorder) Errorf(format string, args ...any) {
	r.Helper()
	msg := fmt.Sprintf(format, args...)
	r.msgs = append(r.msgs, msg)
	r.Error(msg)
}

// --- Small helpers.

func opsFigure(t *testing.T, test string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "figure: ops=%s", test)
	for i := 0; i+1 < len(kv); i += 2 {
		v := fmt.Sprint(kv[i+1])
		if v == "" || strings.ContainsAny(v, " \t\"") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %v=%s", kv[i], v)
	}
	t.Log(b.String())
}

func opsPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func opsRestarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func opsPodState(p *corev1.Pod) string {
	s := fmt.Sprintf("phase %s, ready %v, restarts %d", p.Status.Phase, opsPodReady(p), opsRestarts(p))
	if p.DeletionTimestamp != nil {
		s += ", terminating"
	}
	return s
}

func opsHasPod(pods []corev1.Pod, name string) bool {
	return slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == name })
}

// opsDeploymentSettled: the Deployment has observed its spec, all its
// replicas are updated and ready, and no other Pod (an old or
// terminating one) is left.
func opsDeploymentSettled(d *appsv1.Deployment, pods []corev1.Pod) error {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	if st.ObservedGeneration < d.Generation || st.UpdatedReplicas != want || st.ReadyReplicas != want || st.Replicas != want {
		return fmt.Errorf("deployment %s: replicas %d updated %d ready %d, want %d", d.Name, st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, want)
	}
	var states []string
	settled := len(pods) == int(want)
	for _, p := range pods {
		states = append(states, p.Name+": "+opsPodState(&p))
		if p.DeletionTimestamp != nil || !opsPodReady(&p) {
			settled = false
		}
	}
	if !settled {
		return fmt.Errorf("deployment %s: Pods %v", d.Name, states)
	}
	return nil
}

func opsSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func opsTruncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func opsHead[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}
