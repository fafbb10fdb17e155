// Package e2e runs Backhaul against real kube-apiservers. Each member
// cluster (etcd + kube-apiserver + agent) lives in its own network namespace
// whose firewall drops inbound connections, so the hub, in the root
// namespace, can reach it only through the tunnel its agent dials out.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/test/harness"
)

// Callers known to the hub. The member grants "fleet-admins" cluster-admin;
// nobody grants "mallory" or "root-on-hub" anything.
var callers = map[string]harness.Caller{
	"admin":   {Token: "e2e-fleet-admin-token-0123456789", User: "fleet-admin", Groups: []string{"fleet-admins"}},
	"mallory": {Token: "e2e-mallory-token-0123456789abcd", User: "mallory"},
	"masters": {Token: "e2e-masters-token-0123456789abcd", User: "root-on-hub", Groups: []string{"system:masters"}},
	// impostor's host identity claims the hub's own group; hostsa is
	// named like a service account of the host (the static token file
	// lets a test mint both).
	"impostor": {Token: "e2e-impostor-token-0123456789abc", User: "impostor", Groups: []string{"backhaul:propagators"}},
	"hostsa":   {Token: "e2e-hostsa-token-0123456789abcde", User: "system:serviceaccount:ci:deployer", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ci"}},
}

// agentAdminPort is where each member's main agent serves /metrics, on
// its namespace's loopback.
const agentAdminPort = 9090

// env is the shared topology: one hub, two members with agents. Starting
// apiservers is the slow part, so tests share it and each one restores what
// it breaks.
type environment struct {
	dir        string
	bins       harness.Binaries
	agentBin   string
	hub        *harness.Hub
	members    map[string]*harness.Member
	agents     map[string]*harness.Process
	kubeconfig string
	mu         sync.Mutex
	// late are cleanups registered by tests for shared fixtures.
	late []func()
}

// addCleanup runs f at suite teardown (for fixtures shared by tests).
func (e *environment) addCleanup(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.late = append(e.late, f)
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	// Re-executed inside a namespace as a stand-in node service.
	if addr := os.Getenv(envServe); addr != "" {
		os.Exit(serveNodeStandIn(addr))
	}
	if addr := os.Getenv(envEcho); addr != "" {
		os.Exit(harness.ServeEcho(addr))
	}
	os.Exit(harness.RunSuite(m, "e2e", 5*time.Minute, &env, &setupErr, setup))
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{members: map[string]*harness.Member{}, agents: map[string]*harness.Process{}}
	if _, err := harness.CleanupStale("bhe2e-"); err != nil {
		return nil, err
	}
	// Node addresses of the tests live inside member namespaces; in the
	// root namespace they are blackholed, so a direct dial fails here and
	// never leaves the machine by the default route.
	if out, err := execCommand(ctx, "ip", "route", "replace", "blackhole", nodeRange).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("blackhole %s: %w: %s", nodeRange, err, out)
	}
	cl.Add(func() { _ = execCommand(context.Background(), "ip", "route", "del", "blackhole", nodeRange).Run() })
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		return nil, err
	}
	e.agentBin = agentBin
	if e.dir, err = os.MkdirTemp("", "backhaul-e2e-"); err != nil {
		return nil, err
	}
	cl.Add(func() {
		if os.Getenv("BACKHAUL_E2E_KEEP") == "" {
			_ = os.RemoveAll(e.dir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", e.dir)
		}
	})

	names := []string{"m1", "m2"}
	hubAudit, memberAudit, err := auditArgs(e.dir)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	ms := make([]*harness.Member, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i], errs[i] = harness.StartMember(ctx, harness.MemberConfig{Name: n, Index: 40 + i, Dir: filepath.Join(e.dir, n), APIServerArgs: memberAudit(n)})
		}()
	}
	wg.Wait()
	for i, n := range names {
		if ms[i] != nil {
			m := ms[i]
			e.members[n] = m
			cl.Add(func() { _ = m.Stop() })
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	hostIPs := make([]string, 0, len(names))
	for _, n := range names {
		hostIPs = append(hostIPs, e.members[n].Netns.HostIP.String())
	}
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(e.dir, "hub"), HostIPs: hostIPs,
		Clusters: append(names, "ghost"), Callers: callers, Args: hubAudit,
	})
	if e.hub != nil {
		cl.Add(e.hub.Stop)
	}
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		m := e.members[n]
		// The fleet's admins are admins in every member; nobody else is.
		if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", "fleet-admins", "--clusterrole=cluster-admin", "--group=fleet-admins"); err != nil {
			return nil, fmt.Errorf("grant fleet-admins in %s: %w: %s", n, err, stderr)
		}
		p, err := harness.StartAgent(ctx, e.hub, m, harness.AgentConfig{Binary: agentBin, Cluster: n, AdminPort: agentAdminPort})
		if err != nil {
			return nil, err
		}
		e.agents[n] = p
		cl.Add(func() { e.agent(n).Stop() })
	}
	cl.Add(func() {
		e.mu.Lock()
		late := e.late
		e.mu.Unlock()
		for i := len(late) - 1; i >= 0; i-- {
			late[i]()
		}
	})
	e.kubeconfig = filepath.Join(e.dir, "kubeconfig")
	if err := e.hub.WriteKubeconfig(e.kubeconfig, names, callers["admin"].Token); err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := e.waitReachable(ctx, n, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

func (e *environment) agent(name string) *harness.Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.agents[name]
}

// restartAgent starts cluster's agent again after a test stopped it.
func (e *environment) restartAgent(ctx context.Context, name string) error {
	p, err := harness.StartAgent(ctx, e.hub, e.members[name], harness.AgentConfig{Binary: e.agentBin, Cluster: name, AdminPort: agentAdminPort})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.agents[name] = p
	e.mu.Unlock()
	return nil
}

// restConfig is a client-go config for cluster through the hub as caller.
func (e *environment) restConfig(cluster, caller string) *rest.Config {
	return &rest.Config{
		Host:            e.hub.ClusterURL(cluster),
		BearerToken:     callers[caller].Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.hub.CA.CertPEM},
		QPS:             -1,
		Timeout:         60 * time.Second,
	}
}

func (e *environment) client(t *testing.T, cluster, caller string) *kubernetes.Clientset {
	t.Helper()
	c, err := kubernetes.NewForConfig(e.restConfig(cluster, caller))
	if err != nil {
		t.Fatalf("client for %s as %s: %v", cluster, caller, err)
	}
	return c
}

func (e *environment) waitReachable(ctx context.Context, cluster string, timeout time.Duration) error {
	return harness.WaitFor(ctx, timeout, 200*time.Millisecond, func() error {
		out, err := e.kubectlErr(ctx, "--context", cluster, "get", "--raw", "/readyz")
		if err != nil {
			return fmt.Errorf("%s through hub: %w: %s", cluster, err, out)
		}
		return nil
	})
}

// kubectl runs the real kubectl through the hub and fails t on error.
func (e *environment) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := e.kubectlErr(ctx, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *environment) kubectlErr(ctx context.Context, args ...string) (string, error) {
	return e.kubectlIn(ctx, "", args...)
}

// kubectlIn runs kubectl with stdin, returning combined output.
func (e *environment) kubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	stdout, stderr, err := e.runKubectl(ctx, nil, stdin, args...)
	return stdout + stderr, err
}

// runKubectl runs the real kubectl through the hub with extra environment
// and stdin.
func (e *environment) runKubectl(ctx context.Context, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := execCommand(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", e.kubeconfig}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var o, eb strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &eb
	err = cmd.Run()
	return o.String(), eb.String(), err
}
