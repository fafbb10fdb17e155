package fleet

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// memberValue reads a config map key directly inside a member's namespace
// (not through the hub), or "" when the object is absent.
func (e *environment) memberValue(ctx context.Context, cluster, name, key string) (string, error) {
	out, stderr, err := e.members[cluster].Kubectl(ctx, "-n", "default", "get", "configmap", name, "--ignore-not-found",
		"-o", "jsonpath={.data."+key+"}")
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr)
	}
	return out, nil
}

func (e *environment) waitValue(t *testing.T, ctx context.Context, cluster, name, key, want string) {
	t.Helper()
	require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
		got, err := e.memberValue(ctx, cluster, name, key)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: configmap %s key %s = %q, want %q", cluster, name, key, got, want)
		}
		return nil
	}))
}

const propagationYAML = `apiVersion: backhaul.io/v1alpha1
kind: Propagation
metadata: {name: fleet-config, namespace: default}
spec:
  template:
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: fleet-config}
    data: {version: "%s"}
  placement:
    clusterSelector: {matchLabels: {tier: edge}}
  overrides:
  - clusters: [f2]
    patches:
    - {op: add, path: /data/site, value: f2}
`

// TestPropagationThroughTunnels: a Propagation written at the hub's host
// lands, adjusted per cluster, in members that accept no inbound
// connection; a member offline during an edit gets the edit when its agent
// returns; deleting the Propagation deletes the copies.
func TestPropagationThroughTunnels(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	apply := func(version string) {
		out, err := e.hostKubectl(ctx, fmt.Sprintf(propagationYAML, version), "apply", "-f", "-")
		require.NoError(t, err, out)
	}
	apply("1")
	t.Cleanup(func() {
		_, _ = e.hostKubectl(context.Background(), "", "delete", "propagation", "-n", "default", "fleet-config", "--ignore-not-found")
	})
	e.waitValue(t, ctx, "f1", "fleet-config", "version", "1")
	e.waitValue(t, ctx, "f2", "fleet-config", "version", "1")
	e.waitValue(t, ctx, "f2", "fleet-config", "site", "f2")
	e.waitValue(t, ctx, "f1", "fleet-config", "site", "")
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 250*time.Millisecond, func() error {
		out, err := e.hostKubectl(ctx, "", "get", "propagation", "-n", "default", "fleet-config")
		if err != nil || !strings.Contains(lineOf(out, "fleet-config"), " 3 ") {
			return fmt.Errorf("want READY 3 of TOTAL 3: %v\n%s", err, out)
		}
		return nil
	}))

	// Someone edits f1's copy: the hub's watch of its copies, through f1's
	// tunnel, sees it and applies the copy again, long before the 30 min
	// resync.
	out, stderr, err := e.members["f1"].Kubectl(ctx, "-n", "default", "patch", "configmap", "fleet-config", "--type=merge",
		"--field-manager=someone", "-p", `{"data":{"version":"drifted"}}`)
	require.NoError(t, err, "%s%s", out, stderr)
	e.waitValue(t, ctx, "f1", "fleet-config", "version", "1")

	// f2's agent goes away; the edit reaches f1 now and f2 on its return.
	e.agent("f2").Stop()
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 250*time.Millisecond, func() error {
		out, err := e.ctl(ctx, "cluster", "get", "f2")
		if err != nil || !strings.Contains(lineOf(out, "f2"), "False") {
			return fmt.Errorf("f2 not shown disconnected: %v\n%s", err, out)
		}
		return nil
	}))
	apply("2")
	e.waitValue(t, ctx, "f1", "fleet-config", "version", "2")
	got, err := e.memberValue(ctx, "f2", "fleet-config", "version")
	require.NoError(t, err)
	require.Equal(t, "1", got, "f2 is offline and keeps the old copy")
	out, err = e.hostKubectl(ctx, "", "get", "propagation", "-n", "default", "fleet-config", "-o", "jsonpath={.status.clusters[?(@.cluster==\"f2\")].state}")
	require.NoError(t, err, out)
	require.Equal(t, "Pending", out)

	require.NoError(t, e.startAgent(ctx, "f2", e.agentURL))
	e.waitValue(t, ctx, "f2", "fleet-config", "version", "2")

	out, err = e.hostKubectl(ctx, "", "delete", "propagation", "-n", "default", "fleet-config", "--timeout=60s")
	require.NoError(t, err, out)
	for _, c := range memberNames {
		e.waitValue(t, ctx, c, "fleet-config", "version", "")
	}
}

const divisionYAML = `apiVersion: backhaul.io/v1alpha1
kind: Propagation
metadata: {name: web, namespace: default}
spec:
  template:
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: registry.invalid/web:1}]}
  placement:
    clusterSelector: {matchLabels: {tier: edge}}
  replicaDivision:
    replicas: 10
    weights:
    - {clusters: [f1], weight: 2}
`

// TestReplicaDivisionThroughTunnels: 10 replicas over weights 2:1:1 are
// 5/3/2; when f3's tunnel goes, its share moves to the others (7/3) and
// its copy is left alone; when it returns, 5/3/2 again.
func TestReplicaDivisionThroughTunnels(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := e.hostKubectl(ctx, divisionYAML, "apply", "-f", "-")
	require.NoError(t, err, out)
	t.Cleanup(func() {
		_, _ = e.hostKubectl(context.Background(), "", "delete", "propagation", "-n", "default", "web", "--ignore-not-found")
	})
	replicas := func(cluster string) (string, error) {
		out, stderr, err := e.members[cluster].Kubectl(ctx, "-n", "default", "get", "deployment", "web", "--ignore-not-found", "-o", "jsonpath={.spec.replicas}")
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, stderr)
		}
		return out, nil
	}
	want := func(w map[string]string) {
		t.Helper()
		require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
			for c, n := range w {
				got, err := replicas(c)
				if err != nil {
					return err
				}
				if got != n {
					return fmt.Errorf("%s has %q replicas, want %s", c, got, n)
				}
			}
			return nil
		}))
	}
	want(map[string]string{"f1": "5", "f2": "3", "f3": "2"})

	e.agent("f3").Stop()
	want(map[string]string{"f1": "7", "f2": "3", "f3": "2"})

	require.NoError(t, e.startAgent(ctx, "f3", e.agentURL))
	want(map[string]string{"f1": "5", "f2": "3", "f3": "2"})
}
