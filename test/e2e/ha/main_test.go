// Package ha is the acceptance test of an active-active hub: every replica
// serves every cluster. Three hub replicas run against one host cluster
// behind one virtual IP that the kernel load-balances over them (nftables
// DNAT with numgen random, as kube-proxy's nftables mode does); two member
// clusters, onboarded as an operator would, run agents that keep sessions
// to two replicas through that one address. While a client loop lists,
// writes, watches, execs and port-forwards through the virtual IP, the
// tests kill a replica, roll all three, and cut one off from the host
// API server, and report what the clients saw as "HA:" lines.
//
// Kubernetes' own controllers are absent here, so the tests play them:
// they write the peer Service's EndpointSlices (one per replica, as the
// endpointslice controller would) and keep the virtual IP's backends in
// step with the replicas (as kube-proxy would).
package ha

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"backhaul.io/backhaul/test/harness"
)

const (
	// ns is the hub's namespace in the host cluster (deploy/hub's).
	ns = "backhaul-system"
	// peersService is the headless Service whose EndpointSlices list the
	// replicas' peer listeners (deploy/hub/service.yaml).
	peersService = "backhaul-hub-peers"
	// Subnet indexes of the host and the members (10.251.<i>.0/30).
	hostIndex = 80
	// vipName, vipAddr and vipPort are the one address agents and
	// callers use: the "Service" in front of the replicas.
	vipName = "ha"
	vipPort = 443
	// callerSA is the host ServiceAccount (in default) the client loop
	// calls as; the host grants it clusters/proxy, the members
	// cluster-admin.
	callerSA = "ha-admin"
	// watchNS holds the configmaps the writer creates and the watcher
	// follows, in every member.
	watchNS = "ha-watch"
	// envEcho makes the test binary a TCP echo server on that address
	// (the port-forward target inside a member).
	envEcho = "BACKHAUL_HA_ECHO"
)

var (
	vipAddr = netip.MustParseAddr("10.253.80.1")
	// memberNames are the member clusters; the first has the test
	// kubelet and the pod exec and port-forward reach.
	memberNames  = []string{"ha1", "ha2"}
	replicaNames = []string{"hub-0", "hub-1", "hub-2"}
)

type environment struct {
	dir      string
	root     string
	bins     harness.Binaries
	hubBin   string
	agentBin string
	ctlBin   string

	host           *harness.Member
	hostKubeconfig string // the host's admin, direct
	hostClient     kubernetes.Interface
	members        map[string]*harness.Member
	// hubToken is ServiceAccount backhaul-hub's token (deploy/hub's
	// RBAC); callerToken is callerSA's.
	hubToken    string
	callerToken string

	// ca signs the serving certificate every replica presents and is the
	// hub CA they all share (agent and replica certificates).
	ca                 *harness.CA
	servingCert        string
	servingKey         string
	vip                *harness.VIP
	endpoints          *endpoints // who is behind the VIP
	replicas           []*replica
	vipKubeconfig      string            // a context per member, through the VIP
	replicaKubeconfigs map[string]string // per replica: contexts straight to it
	streams            *streamsFixture

	mu         sync.Mutex // guards agents and onboardOut
	agents     map[string]*harness.Process
	onboardOut map[string]string
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(envEcho); addr != "" {
		os.Exit(harness.ServeEcho(addr))
	}
	os.Exit(harness.RunSuite(m, "ha", 8*time.Minute, &env, &setupErr, setup))
}

// requireEnv fails (never skips) a test whose environment is missing:
// every prerequisite of this suite is one it needs.
func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		t.Fatalf("ha e2e environment is not available: %v", setupErr)
	}
	return env
}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{members: map[string]*harness.Member{}, agents: map[string]*harness.Process{},
		onboardOut: map[string]string{}, replicaKubeconfigs: map[string]string{}}
	for _, n := range append([]string{"hah"}, memberNames...) {
		if _, err := harness.CleanupStale(harness.NetnsPrefix + n); err != nil {
			return nil, err
		}
	}
	if e.root, err = harness.RepoRoot(); err != nil {
		return nil, err
	}
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	if e.hubBin, e.agentBin, err = harness.BackhaulBinaries(ctx); err != nil {
		return nil, err
	}
	if e.ctlBin, err = harness.CtlBinary(ctx); err != nil {
		return nil, err
	}
	kubeletBin, err := harness.TestKubeletBinary(ctx)
	if err != nil {
		return nil, err
	}
	if e.dir, err = harness.SuiteDir(cl, "ha"); err != nil {
		return nil, err
	}

	// The host cluster and the members start together.
	names := append([]string{"hah"}, memberNames...)
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
	rc, err := clientcmd.BuildConfigFromFlags("", e.hostKubeconfig)
	if err != nil {
		return nil, err
	}
	if e.hostClient, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	if err := e.prepareHost(ctx); err != nil {
		return nil, err
	}
	for _, n := range memberNames {
		m := e.members[n]
		if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", "ha-admin",
			"--clusterrole=cluster-admin", "--user=backhaul:host:system:serviceaccount:default:"+callerSA); err != nil {
			return nil, fmt.Errorf("grant %s in %s: %w: %s", callerSA, n, err, stderr)
		}
		if _, stderr, err := m.Kubectl(ctx, "create", "namespace", watchNS); err != nil {
			return nil, fmt.Errorf("namespace %s in %s: %w: %s", watchNS, n, err, stderr)
		}
	}

	// One CA for every replica: the serving certificate (which must name
	// the virtual IP agents and callers dial) and the hub CA that issues
	// agent and replica certificates.
	pki := filepath.Join(e.dir, "pki")
	if e.ca, err = harness.NewCA(pki, "hub-ca"); err != nil {
		return nil, err
	}
	nodeIP := e.host.Netns.HostIP.String()
	if e.servingCert, e.servingKey, err = e.ca.Serving("hub", []string{"127.0.0.1", "localhost", vipAddr.String(), nodeIP}); err != nil {
		return nil, err
	}
	if e.vip, err = harness.NewVIP(harness.VIPConfig{Name: vipName, Addr: vipAddr, Port: vipPort}); err != nil {
		return nil, err
	}
	cl.Add(func() { _ = e.vip.Close() })
	e.endpoints = e.startEndpoints()
	cl.Add(e.endpoints.stop)

	for _, name := range replicaNames {
		r, err := e.newReplica(name)
		if err != nil {
			return nil, err
		}
		e.replicas = append(e.replicas, r)
		cl.Add(r.close)
	}
	for _, r := range e.replicas {
		if err := r.start(ctx); err != nil {
			return nil, err
		}
		if err := e.publishEndpoints(ctx, r, false); err != nil {
			return nil, err
		}
	}
	for _, r := range e.replicas {
		if err := e.waitServing(ctx, r); err != nil {
			return nil, err
		}
		if err := e.endpoints.admit(r, true, "started"); err != nil {
			return nil, err
		}
	}

	// Members are onboarded once every replica knows the others: an agent
	// keeps as many sessions as the replica it lands on says serve.
	cl.Add(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.agents {
			p.Stop()
		}
	})
	oerrs := make([]error, len(memberNames))
	var wg sync.WaitGroup
	for i, n := range memberNames {
		wg.Go(func() { oerrs[i] = e.onboard(ctx, n) })
	}
	wg.Wait()
	if err := joinErrs(oerrs); err != nil {
		return nil, err
	}
	if err := e.writeKubeconfigs(); err != nil {
		return nil, err
	}
	if e.streams, err = e.setupStreams(ctx, cl, kubeletBin); err != nil {
		return nil, err
	}
	if err := e.waitSpread(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	if err := e.waitRoutable(ctx, time.Minute); err != nil {
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

// prepareHost applies deploy/hub as the fleet suite does (CRDs, the
// namespace, the hub's ServiceAccount and RBAC, both Services; the
// Deployment stays pending without a kubelet), lets callerSA reach every
// cluster, and takes tokens for the hub and the caller. Every replica
// runs as ServiceAccount backhaul-hub, which proves its RBAC is enough.
func (e *environment) prepareHost(ctx context.Context) error {
	if out, err := e.hostKubectl(ctx, "", "apply", "--server-side", "-k", filepath.Join(e.root, "deploy/hub")); err != nil {
		return fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	rbac := `apiVersion: v1
kind: ServiceAccount
metadata: {name: ` + callerSA + `, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: backhaul-proxy-all}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ha-admin-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-proxy-all}
subjects: [{kind: ServiceAccount, name: ` + callerSA + `, namespace: default}]
`
	if out, err := e.hostKubectl(ctx, rbac, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("host RBAC: %w: %s", err, out)
	}
	token := func(saNS, sa string) (string, error) {
		out, err := e.hostKubectl(ctx, "", "-n", saNS, "create", "token", sa, "--duration=2h")
		if err != nil {
			return "", fmt.Errorf("token for %s/%s: %w: %s", saNS, sa, err, out)
		}
		return strings.TrimSpace(out), nil
	}
	var err error
	if e.hubToken, err = token(ns, "backhaul-hub"); err != nil {
		return err
	}
	if e.callerToken, err = token("default", callerSA); err != nil {
		return err
	}
	return harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io,hubreplicas.backhaul.io")
		return err
	})
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

var onboardLine = regexp.MustCompile(`(?m)^\s*(?:sh\s+)?\S*onboard\.sh\s+(.*)$`)

// onboardArgs are the arguments of the onboard.sh command backhaulctl
// printed.
func onboardArgs(out string) ([]string, error) {
	m := onboardLine.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no onboard.sh command in backhaulctl output:\n%s", out)
	}
	args := strings.Fields(strings.TrimSuffix(strings.TrimSpace(m[1]), "\\"))
	for i, a := range args {
		args[i] = strings.Trim(a, `'"`)
	}
	return args, nil
}

func flagValue(args []string, name string) string {
	for i := 1; i < len(args); i++ {
		if args[i-1] == name {
			return args[i]
		}
	}
	return ""
}

// onboard registers name with backhaulctl, runs onboard.sh against the
// member as its admin, and starts the agent the way the Deployment would,
// as in the fleet suite: with the Secret the script created, dialling the
// URL backhaulctl printed (the virtual IP), keeping two sessions.
func (e *environment) onboard(ctx context.Context, name string) error {
	m := e.members[name]
	out, err := e.ctl(ctx, "cluster", "add", name, "--labels", "site="+name)
	if err != nil {
		return fmt.Errorf("backhaulctl cluster add %s: %w\n%s", name, err, out)
	}
	args, err := onboardArgs(out)
	if err != nil {
		return err
	}
	hubURL := flagValue(args, "--hub-url")
	if want := "wss://" + e.vip.String(); hubURL != want {
		return fmt.Errorf("backhaulctl printed --hub-url %q, want the virtual IP %q:\n%s", hubURL, want, out)
	}
	out, err = harness.Onboard(ctx, harness.OnboardConfig{
		Member: m, Script: filepath.Join(e.root, "deploy/onboard.sh"), Kubectl: e.bins.Kubectl, Namespace: ns, Args: args,
		StartAgent: func() error { return e.startAgent(ctx, name, hubURL) },
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

func (e *environment) startAgent(ctx context.Context, name, hubURL string) error {
	p, err := harness.StartOnboardedAgent(ctx, e.members[name], e.agentBin, ns, hubURL, "--hub-connections", "2")
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

// writeKubeconfigs writes the callers' kubeconfigs: one through the
// virtual IP, and one straight to each replica (to place a stream on a
// known replica).
func (e *environment) writeKubeconfigs() error {
	e.vipKubeconfig = filepath.Join(e.dir, "vip.kubeconfig")
	if err := writeCallerKubeconfig(e.vipKubeconfig, "https://"+e.vip.String(), e.ca.CertFile, e.callerToken); err != nil {
		return err
	}
	for _, r := range e.replicas {
		p := filepath.Join(e.dir, r.name+".kubeconfig")
		if err := writeCallerKubeconfig(p, fmt.Sprintf("https://127.0.0.1:%d", r.port), e.ca.CertFile, e.callerToken); err != nil {
			return err
		}
		e.replicaKubeconfigs[r.name] = p
	}
	return nil
}

// writeCallerKubeconfig has a context per member at hub/clusters/NAME.
func writeCallerKubeconfig(path, hub, caFile, token string) error {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n")
	for _, c := range memberNames {
		fmt.Fprintf(&b, "- name: %s\n  cluster:\n    server: %q\n    certificate-authority: %q\n", c, hub+"/clusters/"+c, caFile)
	}
	fmt.Fprintf(&b, "users:\n- name: caller\n  user:\n    token: %q\ncontexts:\n", token)
	for _, c := range memberNames {
		fmt.Fprintf(&b, "- name: %s\n  context:\n    cluster: %s\n    user: caller\n", c, c)
	}
	fmt.Fprintf(&b, "current-context: %s\n", memberNames[0])
	return os.WriteFile(path, []byte(b.String()), 0o600)
}
