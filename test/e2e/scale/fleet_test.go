//go:build bench

package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"backhaul.io/backhaul/test/harness"
)

// Topology: the host cluster "sch" on its own etcd at netns index 110,
// the shared etcd's anchor at 111, members sc01.. at 112 onwards.
const (
	hostName   = "sch"
	hostIndex  = 110
	etcdName   = "scetcd"
	etcdIndex  = 111
	firstIndex = 112
	maxMembers = 254 - firstIndex + 1
	// hubNamespace is the hub's namespace in the host (deploy/hub).
	hubNamespace = "backhaul-system"
	// clusterLabel marks the bench's Clusters; placements select on it.
	clusterLabel = "bench.backhaul.io/fleet"
	// startConcurrency bounds how many API servers start, and how many
	// members onboard, at once: all twenty at once on a small machine
	// only make each slower.
	startConcurrency = 4
)

var (
	clustersGVR     = schema.GroupVersionResource{Group: "backhaul.io", Version: "v1alpha1", Resource: "clusters"}
	propagationsGVR = schema.GroupVersionResource{Group: "backhaul.io", Version: "v1alpha1", Resource: "propagations"}
)

// fleet is a host cluster, a hub process and members on one etcd, each
// member with a real agent tunnelling to the hub.
type fleet struct {
	dir, root      string
	bins           harness.Binaries
	agentBin       string
	ctlBin         string
	etcd           *harness.SharedEtcd
	host           *harness.Member
	hostKubeconfig string
	hubKubeconfig  string
	hub            *harness.Hub
	// agentURL is what agents dial: the hub's port on the host's HostIP,
	// a root-namespace address every member namespace routes to.
	agentURL string
	members  []*harness.Member
	dyn      *dynamic.DynamicClient

	mu     sync.Mutex
	agents map[string]*harness.Process
}

// startFleet builds the fleet; t.Cleanup stops every process by its PID
// and deletes every namespace, also when the test fails. (A test binary
// killed outright takes its children with it, Pdeathsig; the namespaces
// it leaves are removed by the next run's CleanupStale.)
func startFleet(ctx context.Context, t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{agents: map[string]*harness.Process{}}
	var err error
	if _, err = harness.CleanupStale(harness.NetnsPrefix + "sc"); err != nil {
		t.Fatal(err)
	}
	if f.root, err = harness.RepoRoot(); err != nil {
		t.Fatal(err)
	}
	if f.bins, err = harness.LocateBinaries(); err != nil {
		t.Fatalf("%v (run `make kube-bins deps`)", err)
	}
	hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bin := os.Getenv("BACKHAUL_BENCH_HUB"); bin != "" {
		// Another build of the hub, to compare (e.g. an earlier commit's).
		hubBin = bin
		t.Logf("hub binary %s (BACKHAUL_BENCH_HUB)", bin)
	}
	f.agentBin = agentBin
	if f.ctlBin, err = harness.CtlBinary(ctx); err != nil {
		t.Fatal(err)
	}
	if f.dir, err = os.MkdirTemp("", "backhaul-scale-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("BACKHAUL_E2E_KEEP") == "" && !t.Failed() {
			_ = os.RemoveAll(f.dir)
		} else {
			t.Logf("logs kept in %s", f.dir)
		}
	})

	start := time.Now()
	f.etcd, err = harness.StartSharedEtcd(ctx, harness.SharedEtcdConfig{Name: etcdName, Index: etcdIndex, Dir: filepath.Join(f.dir, etcdName)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.etcd.Stop() }) // after the members: cleanups run newest first

	// The host on its own etcd, as a hub's store would be; the members
	// on the shared one, a few at a time.
	names := []string{hostName}
	for i := range n {
		names = append(names, fmt.Sprintf("sc%02d", i+1))
	}
	ms := make([]*harness.Member, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, startConcurrency)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cfg := harness.MemberConfig{Name: name, Index: hostIndex, Dir: filepath.Join(f.dir, name)}
			if i > 0 {
				cfg.Index = firstIndex + i - 1
				cfg.EtcdServers, cfg.EtcdPrefix = f.etcd.URL, f.etcd.Prefix(name)
			}
			ms[i], errs[i] = harness.StartMember(ctx, cfg)
		})
	}
	wg.Wait()
	for _, m := range ms {
		if m != nil {
			t.Cleanup(func() { _ = m.Stop() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	f.host, f.members = ms[0], ms[1:]
	t.Logf("host and %d members (one etcd) ready in %v", n, time.Since(start).Round(100*time.Millisecond))

	if err := f.host.Netns.AllowInbound(harness.APIServerPort); err != nil {
		t.Fatal(err)
	}
	f.hostKubeconfig = filepath.Join(f.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(f.hostKubeconfig, f.host.ExternalURL, f.host.CAPEM, f.host.AdminToken); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.hostKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 500, 1000
	if f.dyn, err = dynamic.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	if err := f.prepareHost(ctx); err != nil {
		t.Fatal(err)
	}

	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	agentHost := f.host.Netns.HostIP.String()
	f.agentURL = fmt.Sprintf("wss://%s:%d", agentHost, port)
	hubDir := filepath.Join(f.dir, "hub")
	// Production defaults, except what a harness hub needs: its CA (which
	// signed the serving certificate) signs agent certificates too.
	f.hub, err = harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: hubDir, Port: port, HostIPs: []string{agentHost},
		Args: append([]string{
			"--registry=kube", "--kubeconfig", f.hubKubeconfig, "--namespace", hubNamespace,
			"--ca-cert-file", filepath.Join(hubDir, "hub-ca.crt"), "--ca-key-file", filepath.Join(hubDir, "hub-ca.key"),
			"--advertise-url", f.agentURL,
		}, extraHubArgs()...),
	})
	if f.hub != nil {
		t.Cleanup(f.hub.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.agents {
			p.Stop()
		}
	})

	start = time.Now()
	oerrs := make([]error, len(f.members))
	for i, m := range f.members {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			oerrs[i] = f.onboard(ctx, m)
		})
	}
	wg.Wait()
	if err := errors.Join(oerrs...); err != nil {
		t.Fatal(err)
	}
	if err := f.waitClustersReady(ctx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d members onboarded (backhaulctl cluster add, onboard.sh, agent) and Ready in %v",
		n, time.Since(start).Round(100*time.Millisecond))
	return f
}

// prepareHost applies the shipped hub base (CRDs, namespace, the hub's
// ServiceAccount and RBAC) and writes the kubeconfig the hub process runs
// with: that ServiceAccount's.
func (f *fleet) prepareHost(ctx context.Context) error {
	if out, err := f.hostKubectl(ctx, "apply", "--server-side", "-k", filepath.Join(f.root, "deploy/hub")); err != nil {
		return fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	out, err := f.hostKubectl(ctx, "-n", hubNamespace, "create", "token", "backhaul-hub", "--duration=4h")
	if err != nil {
		return fmt.Errorf("hub token: %w: %s", err, out)
	}
	f.hubKubeconfig = filepath.Join(f.dir, "hub-host.kubeconfig")
	if err := harness.WriteKubeconfig(f.hubKubeconfig, f.host.ExternalURL, f.host.CAPEM, strings.TrimSpace(out)); err != nil {
		return err
	}
	if out, err := f.hostKubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/clusters.backhaul.io", "crd/propagations.backhaul.io"); err != nil {
		return fmt.Errorf("wait for CRDs: %w: %s", err, out)
	}
	return nil
}

// hostKubectl runs kubectl against the host cluster as its admin.
func (f *fleet) hostKubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.bins.Kubectl, append([]string{"--kubeconfig", f.hostKubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// onboard registers m with backhaulctl, runs deploy/onboard.sh against it
// (which binds the hub's push identity, group backhaul:propagators, to
// cluster-admin) and starts its agent as the Deployment would.
func (f *fleet) onboard(ctx context.Context, m *harness.Member) error {
	cmd := exec.CommandContext(ctx, f.ctlBin, "--kubeconfig", f.hostKubeconfig, "--namespace", hubNamespace,
		"cluster", "add", m.Name, "--labels", clusterLabel+"=scale")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("backhaulctl cluster add %s: %w\n%s", m.Name, err, out)
	}
	oc, err := harness.ParseOnboardCommand(string(out))
	if err != nil {
		return err
	}
	_, err = harness.Onboard(ctx, harness.OnboardConfig{
		Member: m, Script: filepath.Join(f.root, "deploy/onboard.sh"), Kubectl: f.bins.Kubectl,
		Namespace: hubNamespace, Args: oc.Args,
		StartAgent: func() error { return f.startAgent(ctx, m) },
	})
	if err != nil {
		if a := f.agent(m.Name); a != nil {
			return fmt.Errorf("%w\nagent:\n%s", err, a.Tail(20))
		}
	}
	return err
}

// startAgent runs m's agent with the ServiceAccount token and Secret the
// onboarding created; after the first start the Secret holds its
// certificate.
func (f *fleet) startAgent(ctx context.Context, m *harness.Member) error {
	p, err := harness.StartOnboardedAgent(ctx, m, f.agentBin, hubNamespace, f.agentURL)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.agents[m.Name] = p
	f.mu.Unlock()
	return nil
}

func (f *fleet) agent(name string) *harness.Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.agents[name]
}

// clusterCondition says whether Cluster name's condition typ is True.
func clusterCondition(c *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(c.Object, "status", "conditions")
	for _, x := range conds {
		m, _ := x.(map[string]any)
		if m["type"] == typ {
			return m["status"] == "True"
		}
	}
	return false
}

// waitClustersReady waits until every member's Cluster is Ready: the hub
// probed its /readyz through the tunnel.
func (f *fleet) waitClustersReady(ctx context.Context, bound time.Duration) error {
	return harness.WaitFor(ctx, bound, time.Second, func() error {
		list, err := f.dyn.Resource(clustersGVR).List(ctx, metav1.ListOptions{LabelSelector: clusterLabel})
		if err != nil {
			return err
		}
		var notReady []string
		ready := map[string]bool{}
		for i := range list.Items {
			ready[list.Items[i].GetName()] = clusterCondition(&list.Items[i], "Ready")
		}
		for _, m := range f.members {
			if !ready[m.Name] {
				notReady = append(notReady, m.Name)
			}
		}
		if len(notReady) > 0 {
			return fmt.Errorf("clusters not Ready: %s", strings.Join(notReady, " "))
		}
		return nil
	})
}

// waitCluster waits until Cluster name's condition typ is want.
func (f *fleet) waitCluster(ctx context.Context, name, typ string, want bool, bound time.Duration) error {
	return harness.WaitFor(ctx, bound, 200*time.Millisecond, func() error {
		c, err := f.dyn.Resource(clustersGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := clusterCondition(c, typ); got != want {
			return fmt.Errorf("cluster %s: %s is %v, want %v", name, typ, got, want)
		}
		return nil
	})
}

// pids lists the fleet's processes other than the hub, by group: agents;
// members (their API servers and the etcd they share); host (its API
// server and etcd).
func (f *fleet) pids() map[string][]int {
	out := map[string][]int{}
	add := func(g string, p *harness.Process) {
		if p != nil {
			out[g] = append(out[g], p.PID())
		}
	}
	f.mu.Lock()
	for _, p := range f.agents {
		add("agents", p)
	}
	f.mu.Unlock()
	for _, m := range f.members {
		add("members", m.APIServerProcess())
	}
	add("members", f.etcd.Process())
	add("host", f.host.APIServerProcess())
	add("host", f.host.EtcdProcess())
	return out
}

// extraHubArgs are flags BACKHAUL_BENCH_HUB_ARGS adds to the hub's (e.g.
// "--log-level=debug").
func extraHubArgs() []string { return strings.Fields(os.Getenv("BACKHAUL_BENCH_HUB_ARGS")) }
