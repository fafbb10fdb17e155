// Package statuspage drives the hub's status page in a real browser
// (headless Chromium through the DevTools protocol, github.com/chromedp):
// a hub with a host cluster holds three registered clusters, two of them
// members with agents in network namespaces and one never connected; the
// tests sign in as callers of the hub's token file, read what the page
// draws, use its search, filters and views, watch it follow a
// disconnection live, and keep screenshots in _output/artifacts. A second
// part measures the page with a fleet of 10,000 clusters, served by the
// same handler in-process.
package statuspage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	ns = "backhaul-system"
	// Network namespace indexes: the host, then the members.
	hostIndex = 100
	// never is registered and never connects.
	never = "sp3"
)

// memberNames are the members with agents.
var memberNames = []string{"sp1", "sp2"}

// Callers from the hub's token file. The host's RBAC lets admin reach
// every cluster and alice only sp1.
var callers = map[string]harness.Caller{
	"admin": {Token: "statuspage-admin-token-0123456789", User: "status-admin"},
	"alice": {Token: "statuspage-alice-token-0123456789", User: "status-alice"},
}

type environment struct {
	dir            string
	bins           harness.Binaries
	agentBin       string
	host           *harness.Member
	hostKubeconfig string
	members        map[string]*harness.Member
	hub            *harness.Hub

	mu     sync.Mutex
	agents map[string]*harness.Process
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "statuspage", 5*time.Minute, &env, &setupErr, setup))
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{members: map[string]*harness.Member{}, agents: map[string]*harness.Process{}}
	if _, err := harness.CleanupStale(harness.NetnsPrefix + "sp"); err != nil {
		return nil, err
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		return nil, err
	}
	e.agentBin = agentBin
	if e.dir, err = harness.SuiteDir(cl, "statuspage"); err != nil {
		return nil, err
	}

	names := append([]string{"sph"}, memberNames...)
	cfgs := make([]harness.MemberConfig, len(names))
	for i, n := range names {
		cfgs[i] = harness.MemberConfig{Name: n, Index: hostIndex + i, Dir: filepath.Join(e.dir, n)}
	}
	ms, err := harness.StartMembers(ctx, cl, cfgs...)
	if err != nil {
		return nil, err
	}
	e.host = ms[0]
	for i, n := range memberNames {
		e.members[n] = ms[i+1]
	}
	if err := e.host.Netns.AllowInbound(harness.APIServerPort); err != nil {
		return nil, err
	}
	e.hostKubeconfig = filepath.Join(e.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(e.hostKubeconfig, e.host.ExternalURL, e.host.CAPEM, e.host.AdminToken); err != nil {
		return nil, err
	}
	hubKubeconfig, err := e.prepareHost(ctx, root)
	if err != nil {
		return nil, err
	}

	var hostIPs []string
	for _, n := range memberNames {
		hostIPs = append(hostIPs, e.members[n].Netns.HostIP.String())
	}
	hubDir := filepath.Join(e.dir, "hub")
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: hubDir, HostIPs: hostIPs, Callers: callers,
		// Agents authenticate with the token file's tokens; the Cluster
		// objects are the registry.
		Clusters: memberNames,
		Args: []string{
			"--registry=kube", "--kubeconfig", hubKubeconfig, "--namespace", ns,
			"--ca-cert-file", filepath.Join(hubDir, "hub-ca.crt"), "--ca-key-file", filepath.Join(hubDir, "hub-ca.key"),
			"--cluster-status-interval", "1s", "--cluster-heartbeat-interval", "5s", "--auth-cache-ttl", "1s",
		},
	})
	if e.hub != nil {
		cl.Add(e.hub.Stop)
	}
	if err != nil {
		return nil, err
	}
	cl.Add(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.agents {
			p.Stop()
		}
	})
	for _, n := range memberNames {
		if err := e.startAgent(ctx, n); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// prepareHost installs deploy/hub (CRDs, namespace, the hub's
// ServiceAccount and RBAC), registers the three clusters, grants the
// callers, and returns a kubeconfig of the hub's ServiceAccount.
func (e *environment) prepareHost(ctx context.Context, root string) (string, error) {
	if out, err := e.hostKubectl(ctx, "", "apply", "--server-side", "-k", filepath.Join(root, "deploy/hub")); err != nil {
		return "", fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	if err := harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io")
		return err
	}); err != nil {
		return "", err
	}
	var objects strings.Builder
	for _, n := range append(append([]string{}, memberNames...), never) {
		fmt.Fprintf(&objects, "apiVersion: backhaul.io/v1alpha1\nkind: Cluster\nmetadata: {name: %s, labels: {e2e: statuspage}}\n---\n", n)
	}
	objects.WriteString(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: statuspage-proxy-all}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: statuspage-proxy-sp1}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get], resourceNames: [sp1]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: statuspage-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: statuspage-proxy-all}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: status-admin}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: statuspage-alice}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: statuspage-proxy-sp1}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: status-alice}]
`)
	if out, err := e.hostKubectl(ctx, objects.String(), "apply", "-f", "-"); err != nil {
		return "", fmt.Errorf("clusters and RBAC: %w: %s", err, out)
	}
	out, err := e.hostKubectl(ctx, "", "-n", ns, "create", "token", "backhaul-hub", "--duration=2h")
	if err != nil {
		return "", fmt.Errorf("hub token: %w: %s", err, out)
	}
	kc := filepath.Join(e.dir, "hub-host.kubeconfig")
	return kc, harness.WriteKubeconfig(kc, e.host.ExternalURL, e.host.CAPEM, strings.TrimSpace(out))
}

func (e *environment) hostKubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", e.hostKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *environment) startAgent(ctx context.Context, name string) error {
	p, err := harness.StartAgent(ctx, e.hub, e.members[name], harness.AgentConfig{Binary: e.agentBin, Cluster: name})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.agents[name] = p
	e.mu.Unlock()
	return nil
}

// stopAgent stops cluster's agent (SIGTERM: it ends its session).
func (e *environment) stopAgent(name string) {
	e.mu.Lock()
	p := e.agents[name]
	delete(e.agents, name)
	e.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}
