// Package fleet runs Backhaul the way an operator installs it: a host
// cluster holds Cluster objects, backhaulctl registers members,
// deploy/onboard.sh installs the agent in each, and agents enroll for
// certificates with one-use bootstrap tokens. Members live in network
// namespaces that refuse inbound connections; only the host cluster's API
// is open to the hub.
package fleet

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

const ns = "backhaul-system"

// memberNames are the member clusters, all onboarded in setup.
var memberNames = []string{"f1", "f2", "f3"}

// Host-cluster service accounts used as callers: fleet-admin may reach
// every cluster, alice only f1. Members grant both by the names the hub
// gives host service accounts there (--member-system-username-prefix).
const (
	saAdmin     = "system:serviceaccount:default:fleet-admin"
	saAlice     = "system:serviceaccount:default:alice"
	memberAdmin = "backhaul:host:" + saAdmin
	memberAlice = "backhaul:host:" + saAlice
)

type environment struct {
	dir            string
	root           string
	bins           harness.Binaries
	agentBin       string
	ctlBin         string
	host           *harness.Member
	hostKubeconfig string
	// hubKubeconfig is the hub's: ServiceAccount backhaul-hub of deploy/hub.
	hubKubeconfig string
	members       map[string]*harness.Member
	hub           *harness.Hub
	// agentURL is what agents dial: the hub's port on a root-namespace
	// address every member namespace routes to.
	agentURL string

	mu     sync.Mutex
	agents map[string]*harness.Process
	// tokens are host service-account tokens of callers.
	tokens map[string]string
	oidc   *oidcIssuer
	// onboardOut is onboard.sh's output per cluster.
	onboardOut map[string]string
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "fleet", 6*time.Minute, &env, &setupErr, setup))
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{members: map[string]*harness.Member{}, agents: map[string]*harness.Process{},
		tokens: map[string]string{}, onboardOut: map[string]string{}}
	if _, err := harness.CleanupStale(harness.NetnsPrefix + "f"); err != nil {
		return nil, err
	}
	if e.root, err = harness.RepoRoot(); err != nil {
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
	if e.ctlBin, err = harness.CtlBinary(ctx); err != nil {
		return nil, err
	}
	if e.dir, err = harness.SuiteDir(cl, "fleet"); err != nil {
		return nil, err
	}

	// The host cluster trusts an OIDC issuer, as many do.
	if e.oidc, err = startOIDC(e.dir, 50); err != nil {
		return nil, err
	}
	cl.Add(func() { _ = e.oidc.srv.Close() })

	// The host cluster and three members start together.
	names := []string{"fh", "f1", "f2", "f3"}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	ms := make([]*harness.Member, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := harness.MemberConfig{Name: n, Index: 50 + i, Dir: filepath.Join(e.dir, n)}
			if i == 0 {
				cfg.APIServerArgs = []string{"--authentication-config=" + e.oidc.auth}
			}
			ms[i], errs[i] = harness.StartMember(ctx, cfg)
		}()
	}
	wg.Wait()
	for i := range names {
		if m := ms[i]; m != nil {
			cl.Add(func() { _ = m.Stop() })
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	e.host = ms[0]
	e.members["f1"], e.members["f2"], e.members["f3"] = ms[1], ms[2], ms[3]
	if err := e.host.Netns.AllowInbound(harness.APIServerPort); err != nil {
		return nil, err
	}
	e.hostKubeconfig = filepath.Join(e.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(e.hostKubeconfig, e.host.ExternalURL, e.host.CAPEM, e.host.AdminToken); err != nil {
		return nil, err
	}
	if err := e.prepareHost(ctx); err != nil {
		return nil, err
	}

	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	agentHost := e.members["f1"].Netns.HostIP.String()
	e.agentURL = fmt.Sprintf("wss://%s:%d", agentHost, port)
	hubDir := filepath.Join(e.dir, "hub")
	e.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: hubDir, Port: port,
		HostIPs: []string{agentHost, e.members["f2"].Netns.HostIP.String(), e.members["f3"].Netns.HostIP.String()},
		Args: []string{
			"--registry=kube", "--kubeconfig", e.hubKubeconfig, "--namespace", ns,
			// The harness's CA signed the serving certificate; it signs
			// agent certificates too, as a hub-provisioned CA would.
			"--ca-cert-file", filepath.Join(hubDir, "hub-ca.crt"), "--ca-key-file", filepath.Join(hubDir, "hub-ca.key"),
			"--advertise-url", e.agentURL,
			// Short enough that every agent renews during the suite.
			"--agent-cert-validity", "2m",
			"--cluster-status-interval", "1s", "--cluster-heartbeat-interval", "5s", "--tunnel-health-write-interval", "5s",
			"--auth-cache-ttl", "1s",
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
		if err := e.grantCallers(ctx, e.members[n]); err != nil {
			return nil, err
		}
	}
	// Onboard the members concurrently, as separate sites would.
	oerrs := make([]error, len(memberNames))
	for i, n := range memberNames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oerrs[i] = e.onboard(ctx, n, "site="+n+",tier=edge")
		}()
	}
	wg.Wait()
	if err := joinErrs(oerrs); err != nil {
		return nil, err
	}
	return e, nil
}

func joinErrs(errs []error) error {
	var msgs []string
	for _, err := range errs {
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "\n---\n"))
}

// prepareHost installs the CRDs, the hub's namespace and the callers'
// service accounts and RBAC in the host cluster.
func (e *environment) prepareHost(ctx context.Context) error {
	// The shipped hub base: CRDs, namespace, the hub's ServiceAccount and
	// RBAC (its Deployment stays pending: the harness runs no kubelet).
	// The hub process below runs with exactly that ServiceAccount, which
	// proves the RBAC is enough for what it does.
	if out, err := e.hostKubectl(ctx, "", "apply", "--server-side", "-k", filepath.Join(e.root, "deploy/hub")); err != nil {
		return fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	rbac := `apiVersion: v1
kind: ServiceAccount
metadata: {name: fleet-admin, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: alice, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: backhaul-proxy-all}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: backhaul-proxy-f1}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get], resourceNames: [f1]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fleet-admin-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-proxy-all}
subjects: [{kind: ServiceAccount, name: fleet-admin, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: oidc-ops-proxy-f1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-proxy-f1}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "oidc:fleet-ops"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-proxy-f1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-proxy-f1}
subjects: [{kind: ServiceAccount, name: alice, namespace: default}]
`
	if out, err := e.hostKubectl(ctx, rbac, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("host RBAC: %w: %s", err, out)
	}
	for _, sa := range []string{"fleet-admin", "alice", ns + "/backhaul-hub"} {
		saNS, saName, ok := strings.Cut(sa, "/")
		if !ok {
			saNS, saName = "default", sa
		}
		out, err := e.hostKubectl(ctx, "", "-n", saNS, "create", "token", saName, "--duration=2h")
		if err != nil {
			return fmt.Errorf("token for %s: %w: %s", sa, err, out)
		}
		e.tokens[saName] = strings.TrimSpace(out)
	}
	e.hubKubeconfig = filepath.Join(e.dir, "hub-host.kubeconfig")
	if err := harness.WriteKubeconfig(e.hubKubeconfig, e.host.ExternalURL, e.host.CAPEM, e.tokens["backhaul-hub"]); err != nil {
		return err
	}
	return harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io")
		return err
	})
}

// grantCallers makes fleet-admin an admin of member m and lets alice read
// namespaces and config maps. (The built-in "view" role is empty here: no
// controller manager aggregates it.)
func (e *environment) grantCallers(ctx context.Context, m *harness.Member) error {
	for _, args := range [][]string{
		{"create", "clusterrolebinding", "fleet-admin", "--clusterrole=cluster-admin", "--user=" + memberAdmin},
		{"create", "clusterrole", "fleet-reader", "--verb=get,list,watch", "--resource=namespaces,configmaps"},
		{"create", "clusterrolebinding", "alice-read", "--clusterrole=fleet-reader", "--user=" + memberAlice},
	} {
		if _, stderr, err := m.Kubectl(ctx, args...); err != nil {
			return fmt.Errorf("%s: %v: %w: %s", m.Name, args, err, stderr)
		}
	}
	return nil
}

// hostKubectl runs kubectl against the host cluster as its admin.
func (e *environment) hostKubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", e.hostKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ctl runs backhaulctl against the host cluster.
func (e *environment) ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.ctlBin, append([]string{"--kubeconfig", e.hostKubeconfig, "--namespace", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// onboard registers name with backhaulctl, runs onboard.sh against the
// member as its admin, and starts the agent the way the Deployment would:
// as ServiceAccount backhaul-agent, with exactly the Secret the script
// created. onboard.sh must see the agent connect through the hub.
func (e *environment) onboard(ctx context.Context, name, labels string) error {
	m := e.members[name]
	out, err := e.ctl(ctx, "cluster", "add", name, "--labels", labels)
	if err != nil {
		return fmt.Errorf("backhaulctl cluster add %s: %w\n%s", name, err, out)
	}
	oc, err := harness.ParseOnboardCommand(out)
	if err != nil {
		return err
	}
	out, err = harness.Onboard(ctx, harness.OnboardConfig{
		Member: m, Script: filepath.Join(e.root, "deploy/onboard.sh"), Kubectl: e.bins.Kubectl, Namespace: ns, Args: oc.Args,
		StartAgent: func() error { return e.startAgent(ctx, name, oc.Flag("--hub-url")) },
	})
	e.mu.Lock()
	e.onboardOut[name] = out
	e.mu.Unlock()
	if err != nil {
		if a := e.agent(name); a != nil {
			return fmt.Errorf("%w\nagent:\n%s", err, a.Tail(20))
		}
		return err
	}
	return nil
}

// startAgent runs cluster's agent with the ServiceAccount token the
// onboarding created, reading and writing Secret backhaul-agent.
func (e *environment) startAgent(ctx context.Context, name, hubURL string) error {
	p, err := harness.StartOnboardedAgent(ctx, e.members[name], e.agentBin, ns, hubURL)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.agents[name] = p
	e.mu.Unlock()
	return nil
}

func (e *environment) agent(name string) *harness.Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.agents[name]
}
