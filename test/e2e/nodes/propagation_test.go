package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// divisionDeploymentYAML is a Propagation (in the host's default
// namespace) of a Deployment of sleeping busybox Pods to clusters %[2]s
// and %[3]s, %[4]d replicas divided 3:2 between them; each cluster's
// copy labels its Pods with the cluster's name (an override), so a Pod
// shows which copy made it. A short grace period: sleep as PID 1 ignores
// SIGTERM, and scaled-down Pods should go before the test looks again.
const divisionDeploymentYAML = `apiVersion: backhaul.io/v1alpha1
kind: Propagation
metadata: {name: %[1]s, namespace: default}
spec:
  template:
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: %[1]s}
    spec:
      replicas: 1
      selector: {matchLabels: {app: %[1]s}}
      template:
        metadata: {labels: {app: %[1]s}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: sleep
            image: ` + busybox + `
            imagePullPolicy: IfNotPresent
            command: [sleep, "3600"]
  placement:
    clusters: [%[2]s, %[3]s]
  overrides:
  - clusters: [%[2]s]
    patches:
    - {op: add, path: /spec/template/metadata/labels/site, value: %[2]s}
  - clusters: [%[3]s]
    patches:
    - {op: add, path: /spec/template/metadata/labels/site, value: %[3]s}
  replicaDivision:
    replicas: %[4]d
    weights:
    - {clusters: [%[2]s], weight: 3}
    - {clusters: [%[3]s], weight: 2}
`

// TestPropagationDividesReplicasOnRealNodes: a Propagation written in the
// host cluster of a Deployment whose replicas are divided 3:2 between two
// members (the suite's m1 and a second member with a real node, onboarded
// here the same way) ends in 3 and 2 Running, Ready Pods on those
// members' nodes, each carrying its cluster's override, and reports both
// clusters applied. Raising the replicas to 7 gives 4 and 3 Running Pods
// (largest remainder of 4.2 and 2.8); deleting the Propagation removes
// the Deployments and their Pods from both members.
func TestPropagationDividesReplicasOnRealNodes(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	m2, m2Node := e.startPropagationMember(ctx, t)
	name := e.name("web")
	sites := []struct {
		m    *harness.Member
		node string
	}{{e.m1, e.m1Node.Name}, {m2, m2Node.Name}}

	apply := func(replicas int) {
		t.Helper()
		out, err := e.hostKubectl(ctx, fmt.Sprintf(divisionDeploymentYAML, name, e.m1.Name, m2.Name, replicas), "apply", "-f", "-")
		require.NoError(t, err, out)
	}
	apply(5)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := e.hostKubectl(ctx, "", "get", "propagation", "-n", "default", name, "-o", "yaml")
			t.Logf("propagation at failure:\n%s", out)
		}
		out, err := e.hostKubectl(ctx, "", "delete", "propagation", "-n", "default", name, "--ignore-not-found", "--timeout=2m")
		assert.NoError(t, err, out)
		// Should the controller not have removed its copy from m1 (a
		// failure this test reports), the next tests still find m1 clean.
		_, stderr, err := e.m1.Kubectl(ctx, "-n", "default", "delete", "deployment", name, "--ignore-not-found", "--wait=false")
		assert.NoError(t, err, stderr)
	})

	want := func(replicas ...int) {
		t.Helper()
		for i, s := range sites {
			require.NoError(t, harness.WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
				return runningCopy(ctx, s.m, s.node, name, replicas[i])
			}), "%s: %d Running Pods of the propagated Deployment", s.m.Name, replicas[i])
		}
		require.NoError(t, harness.WaitFor(ctx, 2*time.Minute, time.Second, func() error {
			return e.propagationApplied(ctx, name, 2)
		}))
	}
	want(3, 2)

	// The copies are the controller's: labelled with the Propagation.
	for _, s := range sites {
		out, stderr, err := s.m.Kubectl(ctx, "-n", "default", "get", "deployment", name, "-o", `jsonpath={.metadata.labels.backhaul\.io/propagation}`)
		require.NoError(t, err, stderr)
		assert.Equal(t, "default."+name, out, s.m.Name)
	}

	// 7 over 3:2 is 4.2 and 2.8: 4 and 3.
	out, err := e.hostKubectl(ctx, "", "patch", "propagation", "-n", "default", name, "--type=merge",
		"-p", `{"spec":{"replicaDivision":{"replicas":7}}}`)
	require.NoError(t, err, out)
	want(4, 3)

	out, err = e.hostKubectl(ctx, "", "delete", "propagation", "-n", "default", name, "--timeout=2m")
	require.NoError(t, err, out)
	for _, s := range sites {
		require.NoError(t, harness.WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
			dep, stderr, err := s.m.Kubectl(ctx, "-n", "default", "get", "deployment", name, "--ignore-not-found", "-o", "name")
			if err != nil {
				return fmt.Errorf("%w: %s", err, stderr)
			}
			pods, stderr, err := s.m.Kubectl(ctx, "-n", "default", "get", "pods", "-l", "app="+name, "-o", "name")
			if err != nil {
				return fmt.Errorf("%w: %s", err, stderr)
			}
			if dep != "" || pods != "" {
				return fmt.Errorf("%s still has %s %s", s.m.Name, strings.TrimSpace(dep), strings.Join(strings.Fields(pods), " "))
			}
			return nil
		}), "the copies and their Pods are removed from %s", s.m.Name)
	}
}

// startPropagationMember starts a second member with a real node,
// grants fleet-admin there and onboards it with the agent as a
// Deployment, waiting until its Cluster is Ready (only Ready clusters
// share in a replica division). Cleanup removes the Cluster from the hub
// and stops the member.
func (e *environment) startPropagationMember(ctx context.Context, t *testing.T) (*harness.Member, *harness.Node) {
	t.Helper()
	m, err := harness.StartMember(ctx, harness.MemberConfig{
		Name: e.name("m2"), Index: e.base + 4, Dir: filepath.Join(e.dir, "propagation-m2"), APIServerArgs: apiServerArgs,
	})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, m.Stop()) })
	nodes, err := e.startNodes(ctx, m)
	require.NoError(t, err)
	require.NoError(t, e.grant(ctx, m))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := e.ctl(ctx, "cluster", "remove", m.Name, "--ignore-not-found", "--wait")
		assert.NoError(t, err, out)
	})
	out, err := e.onboard(ctx, m, "deployment")
	require.NoError(t, err, out)
	require.NoError(t, harness.WaitFor(ctx, 2*time.Minute, time.Second, func() error {
		for _, c := range []string{e.m1.Name, m.Name} {
			if s := e.clusterCondition(ctx, c, "Ready"); s != "True" {
				return fmt.Errorf("%s: %w", c, &condErr{"Ready", s})
			}
		}
		return nil
	}))
	return m, nodes[0]
}

// copyPods is the part of a PodList runningCopy reads.
type copyPods struct {
	Items []struct {
		Metadata struct {
			Name              string            `json:"name"`
			Labels            map[string]string `json:"labels"`
			DeletionTimestamp *string           `json:"deletionTimestamp"`
		} `json:"metadata"`
		Spec struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
		Status struct {
			Phase      string `json:"phase"`
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	} `json:"items"`
}

// runningCopy checks, directly in m, that the copy of Deployment name
// asks for want replicas and has them available, and that exactly want
// Pods of it exist, none being deleted, each Running and Ready on node
// and labelled with m's name by the override.
func runningCopy(ctx context.Context, m *harness.Member, node, name string, want int) error {
	dep, stderr, err := m.Kubectl(ctx, "-n", "default", "get", "deployment", name, "--ignore-not-found",
		"-o", "jsonpath={.spec.replicas}/{.status.readyReplicas}/{.status.availableReplicas}")
	if err != nil {
		return fmt.Errorf("%s: %w: %s", m.Name, err, stderr)
	}
	if n := strconv.Itoa(want); dep != n+"/"+n+"/"+n {
		return fmt.Errorf("%s: deployment %s replicas/ready/available = %q, want %d of each", m.Name, name, dep, want)
	}
	out, stderr, err := m.Kubectl(ctx, "-n", "default", "get", "pods", "-l", "app="+name, "-o", "json")
	if err != nil {
		return fmt.Errorf("%s: %w: %s", m.Name, err, stderr)
	}
	var pods copyPods
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		return harness.Permanent(fmt.Errorf("%s: pods: %w", m.Name, err))
	}
	var notYet []string
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			ready = ready || c.Type == "Ready" && c.Status == "True"
		}
		if site := p.Metadata.Labels["site"]; site != m.Name {
			// Only the copy meant for m makes Pods there.
			return harness.Permanent(fmt.Errorf("%s: pod %s has site %q", m.Name, p.Metadata.Name, site))
		}
		if p.Metadata.DeletionTimestamp != nil || p.Status.Phase != "Running" || !ready || p.Spec.NodeName != node {
			notYet = append(notYet, fmt.Sprintf("%s (%s, ready %t, node %q, deleting %t)",
				p.Metadata.Name, p.Status.Phase, ready, p.Spec.NodeName, p.Metadata.DeletionTimestamp != nil))
		}
	}
	if len(pods.Items) != want || len(notYet) > 0 {
		return fmt.Errorf("%s: %d pods, want exactly %d Running and Ready on %s; not so: %v", m.Name, len(pods.Items), want, node, notYet)
	}
	return nil
}

// propagationStatus is the part of a Propagation the test reads.
type propagationStatus struct {
	Metadata struct {
		Generation int64 `json:"generation"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration int64 `json:"observedGeneration"`
		Conditions         []struct {
			Type               string `json:"type"`
			Status             string `json:"status"`
			ObservedGeneration int64  `json:"observedGeneration"`
			Message            string `json:"message"`
		} `json:"conditions"`
		Clusters        []json.RawMessage `json:"clusters"`
		ReadyClusters   int               `json:"readyClusters"`
		PendingClusters int               `json:"pendingClusters"`
		FailedClusters  int               `json:"failedClusters"`
		TotalClusters   int               `json:"totalClusters"`
	} `json:"status"`
}

// propagationApplied checks that Propagation default/name reports, at
// its current generation, all of its total clusters applied and Ready.
func (e *environment) propagationApplied(ctx context.Context, name string, total int) error {
	out, err := e.hostKubectl(ctx, "", "get", "propagation", "-n", "default", name, "-o", "json")
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	var p propagationStatus
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		return harness.Permanent(err)
	}
	st := p.Status
	if st.ObservedGeneration != p.Metadata.Generation || st.ReadyClusters != total || st.TotalClusters != total ||
		st.PendingClusters != 0 || st.FailedClusters != 0 || len(st.Clusters) != 0 {
		return fmt.Errorf("propagation %s: generation %d, status %s", name, p.Metadata.Generation, out)
	}
	for _, c := range st.Conditions {
		if c.Type == "Ready" {
			if c.Status != "True" || c.ObservedGeneration != p.Metadata.Generation {
				return fmt.Errorf("propagation %s: Ready=%s at generation %d of %d: %s", name, c.Status, c.ObservedGeneration, p.Metadata.Generation, c.Message)
			}
			return nil
		}
	}
	return fmt.Errorf("propagation %s: no Ready condition", name)
}
