// Package nodes runs Backhaul in its production shape, on real nodes: each
// cluster is etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler with a node of containerd, runc, CNI bridge, kubelet and
// kube-proxy (see docs/testing.md). The hub runs as the Pods of
// `kubectl apply -k deploy/hub` in a host cluster behind a TCP load
// balancer; members are onboarded with backhaulctl and deploy/onboard.sh,
// so their agents are Pods too; callers use the real kubectl against real
// containers, through the hub only. Every cluster lives in a network
// namespace that refuses inbound connections.
//
// BACKHAUL_NODES_SLOT (0..3) shifts the suite's names and addresses, so
// two copies may run at once (while developing; CI runs one).
package nodes

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	ns = "backhaul-system"
	// busybox is the workload image (make node-images).
	busybox = "backhaul-e2e/busybox:1.35"
	// hubNodePort and connectNodePort are the hub Service's NodePorts,
	// which the load balancer forwards to.
	hubNodePort     = 30443
	connectNodePort = 30444
	// saAdmin is the host-cluster identity callers use; members grant
	// it by the name the hub gives it there.
	saAdmin     = "system:serviceaccount:default:fleet-admin"
	memberAdmin = "backhaul:host:" + saAdmin
)

// Images every node imports: ours (make image) and the node images.
var images = []string{"backhaul-hub:latest", "backhaul-agent:latest", harness.PauseImage, busybox}

type environment struct {
	slot   int
	prefix string // n<slot>: names of this copy's clusters and nodes
	base   int    // first netns index of this copy
	root   string
	dir    string
	bins   harness.Binaries
	ctlBin string
	// imageArchive holds images, saved once, imported into every node.
	imageArchive string

	host           *harness.Member
	hostNode       *harness.Node
	hostKubeconfig string // host admin, from the root namespace
	// lb and lbConnect are the load balancer in front of the hub
	// Service's NodePorts, on the root-namespace address every member
	// routes to.
	lb, lbConnect *harness.Forwarder
	hubURL        string // https://LB:8443, also the advertised wss:// address
	hubCAFile     string
	adminToken    string // fleet-admin's host token
	// clientCA signs the client certificates the hub accepts (its
	// --client-ca-file): a kube-apiserver's egress selector has no other
	// credential for CONNECT over TCP.
	clientCA *harness.CA

	m1     *harness.Member // member with a node; agent as a Deployment
	m1Node *harness.Node

	mu         sync.Mutex
	onboardOut map[string]string
}

var (
	env      *environment
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, "nodes", 10*time.Minute, &env, &setupErr, setup))
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		harness.Skip(t, "%v", setupErr)
	}
	return env
}

// Names of this copy's clusters.
func (e *environment) name(s string) string { return e.prefix + s }

// apiServerArgs make a member a full cluster for real nodes: the Node
// authorizer and NodeRestriction for kubelets, privileged Pods allowed
// (the DaemonSet agent uses the host network).
var apiServerArgs = []string{"--authorization-mode=Node", "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true"}

func setup(ctx context.Context, cl *harness.Cleanups) (_ *environment, err error) {
	e := &environment{onboardOut: map[string]string{}}
	if s := os.Getenv("BACKHAUL_NODES_SLOT"); s != "" {
		if e.slot, err = strconv.Atoi(s); err != nil || e.slot < 0 || e.slot > 3 {
			return nil, fmt.Errorf("BACKHAUL_NODES_SLOT=%q: want 0..3", s)
		}
	}
	e.prefix = "n" + strconv.Itoa(e.slot)
	e.base = 130 + 6*e.slot
	if _, err := harness.CleanupStale(harness.NetnsPrefix + e.prefix); err != nil {
		return nil, err
	}
	if err := harness.CleanupStaleNodes(); err != nil {
		return nil, err
	}
	if e.root, err = harness.RepoRoot(); err != nil {
		return nil, err
	}
	if e.bins, err = harness.LocateBinaries(); err != nil {
		return nil, fmt.Errorf("%w (run `make deps kube-bins`)", err)
	}
	if _, err := harness.LocateNodeBinaries(); err != nil {
		return nil, err
	}
	if e.ctlBin, err = harness.CtlBinary(ctx); err != nil {
		return nil, err
	}
	if e.dir, err = harness.SuiteDir(cl, "nodes"); err != nil {
		return nil, err
	}
	e.imageArchive = filepath.Join(e.dir, "images.tar")
	if err := harness.SaveImages(ctx, e.imageArchive, images...); err != nil {
		return nil, err
	}

	// The clusters' control planes start together, then their nodes.
	ms, err := harness.StartMembers(ctx, cl,
		harness.MemberConfig{Name: e.name("h"), Index: e.base, Dir: filepath.Join(e.dir, "h"), APIServerArgs: apiServerArgs},
		harness.MemberConfig{Name: e.name("m1"), Index: e.base + 1, Dir: filepath.Join(e.dir, "m1"), APIServerArgs: apiServerArgs},
	)
	if err != nil {
		return nil, err
	}
	e.host, e.m1 = ms[0], ms[1]
	nodes, err := e.startNodes(ctx, ms...)
	if err != nil {
		return nil, err
	}
	e.hostNode, e.m1Node = nodes[0], nodes[1]

	if err := e.installHub(ctx, cl); err != nil {
		return nil, err
	}
	if err := e.grant(ctx, e.m1); err != nil {
		return nil, err
	}
	if _, err := e.onboard(ctx, e.m1, "deployment"); err != nil {
		return nil, err
	}
	return e, nil
}

// startNodes starts each member's control plane and one node in its own
// namespace, concurrently, returning the nodes in order.
func (e *environment) startNodes(ctx context.Context, ms ...*harness.Member) ([]*harness.Node, error) {
	nodes := make([]*harness.Node, len(ms))
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			if errs[i] = m.StartControlPlane(ctx); errs[i] != nil {
				return
			}
			nodes[i], errs[i] = harness.StartNode(ctx, harness.NodeConfig{
				Name: m.Name + "-node", Index: m.Netns.Index, Member: m,
				Dir: filepath.Join(m.Dir, "node"), Images: []string{e.imageArchive},
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return nodes, nil
}

// installHub applies deploy/hub to the host cluster with an overlay as
// docs/install.md describes (the advertised address; the Service as a
// NodePort behind a load balancer; a CA for client certificates, mounted
// from a ConfigMap), waits for the rollout, and makes the caller identity
// fleet-admin.
func (e *environment) installHub(ctx context.Context, cl *harness.Cleanups) error {
	if err := e.host.Netns.AllowInbound(harness.APIServerPort); err != nil {
		return err
	}
	e.hostKubeconfig = filepath.Join(e.dir, "host.kubeconfig")
	if err := harness.WriteKubeconfig(e.hostKubeconfig, e.host.ExternalURL, e.host.CAPEM, e.host.AdminToken); err != nil {
		return err
	}
	lbHost := e.host.Netns.HostIP.String()
	var err error
	if e.lb, err = harness.NewForwarderOn(lbHost+":8443", fmt.Sprintf("%s:%d", e.host.Netns.NSIP, hubNodePort)); err != nil {
		return err
	}
	cl.Add(func() { _ = e.lb.Close() })
	if e.lbConnect, err = harness.NewForwarderOn(lbHost+":8444", fmt.Sprintf("%s:%d", e.host.Netns.NSIP, connectNodePort)); err != nil {
		return err
	}
	cl.Add(func() { _ = e.lbConnect.Close() })
	e.hubURL = "https://" + lbHost + ":8443"

	overlay := filepath.Join(e.dir, "hub-overlay")
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		return err
	}
	// kustomize takes a base by relative path only.
	base, err := filepath.Rel(overlay, filepath.Join(e.root, "deploy/hub"))
	if err != nil {
		return err
	}
	if e.clientCA, err = harness.NewCA(filepath.Join(e.dir, "pki"), "hub-client-ca"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(overlay, "client-ca.crt"), e.clientCA.CertPEM, 0o644); err != nil {
		return err
	}
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
configMapGenerator:
- name: backhaul-hub-client-ca
  namespace: backhaul-system
  files: [ca.crt=client-ca.crt]
patches:
- target: {kind: Deployment, name: backhaul-hub}
  patch: |
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --client-ca-file=/etc/backhaul/client-ca/ca.crt
    - op: add
      path: /spec/template/spec/containers/0/volumeMounts/-
      value: {name: client-ca, mountPath: /etc/backhaul/client-ca, readOnly: true}
    - op: add
      path: /spec/template/spec/volumes/-
      value: {name: client-ca, configMap: {name: backhaul-hub-client-ca}}
- target: {kind: ConfigMap, name: backhaul-hub-config}
  patch: |
    - op: replace
      path: /data/advertise-url
      value: wss://%s:8443
- target: {kind: Service, name: backhaul-hub}
  patch: |
    - op: replace
      path: /spec/type
      value: NodePort
    - op: add
      path: /spec/ports/0/nodePort
      value: %d
    - op: add
      path: /spec/ports/1/nodePort
      value: %d
`, base, lbHost, hubNodePort, connectNodePort)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		return err
	}
	if out, err := e.hostKubectl(ctx, "", "apply", "--server-side", "-k", overlay); err != nil {
		return fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	if out, err := e.hostKubectl(ctx, "", "-n", ns, "rollout", "status", "deploy/backhaul-hub", "--timeout=4m"); err != nil {
		pods, _ := e.hostKubectl(ctx, "", "-n", ns, "get", "pods", "-o", "wide")
		events, _ := e.hostKubectl(ctx, "", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		return fmt.Errorf("hub rollout: %w: %s\n%s\n%s", err, out, pods, events)
	}
	caB64, err := e.hostKubectl(ctx, "", "-n", ns, "get", "configmap", "backhaul-hub-info", "-o", `jsonpath={.data.ca\.crt}`)
	if err != nil {
		return fmt.Errorf("hub info: %w: %s", err, caB64)
	}
	e.hubCAFile = filepath.Join(e.dir, "hub-ca.crt")
	if err := os.WriteFile(e.hubCAFile, []byte(caB64), 0o644); err != nil {
		return err
	}

	rbac := `apiVersion: v1
kind: ServiceAccount
metadata: {name: fleet-admin, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: backhaul-proxy-all}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fleet-admin-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-proxy-all}
subjects: [{kind: ServiceAccount, name: fleet-admin, namespace: default}]
`
	if out, err := e.hostKubectl(ctx, rbac, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("caller RBAC: %w: %s", err, out)
	}
	tok, err := e.hostKubectl(ctx, "", "-n", "default", "create", "token", "fleet-admin", "--duration=4h")
	if err != nil {
		return fmt.Errorf("caller token: %w: %s", err, tok)
	}
	e.adminToken = strings.TrimSpace(tok)
	return nil
}

// grant makes fleet-admin (as the hub names it there) an admin of m.
func (e *environment) grant(ctx context.Context, m *harness.Member) error {
	if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", "fleet-admin",
		"--clusterrole=cluster-admin", "--user="+memberAdmin); err != nil {
		return fmt.Errorf("%s: %w: %s", m.Name, err, stderr)
	}
	return nil
}

// onboard registers m with backhaulctl and runs the printed onboard.sh
// against it (in its namespace, as its admin), with the agent in mode;
// the script waits until the hub reports the cluster connected. It
// returns the script's output.
func (e *environment) onboard(ctx context.Context, m *harness.Member, mode string, extra ...string) (string, error) {
	out, err := e.ctl(ctx, append([]string{"cluster", "add", m.Name, "--mode", mode}, extra...)...)
	if err != nil {
		return out, fmt.Errorf("backhaulctl cluster add %s: %w\n%s", m.Name, err, out)
	}
	oc, err := harness.ParseOnboardCommand(out)
	if err != nil {
		return out, err
	}
	script := m.Netns.Command(ctx, "sh", append(append([]string{filepath.Join(e.root, "deploy/onboard.sh")}, oc.Args...),
		"--kubeconfig", m.AdminKubeconfig, "--wait-timeout", "180s")...)
	script.Env = append(os.Environ(), "PATH="+filepath.Dir(e.bins.Kubectl)+":"+os.Getenv("PATH"))
	b, err := script.CombinedOutput()
	e.mu.Lock()
	e.onboardOut[m.Name] = string(b)
	e.mu.Unlock()
	if err != nil {
		pods, _, _ := m.Kubectl(ctx, "-n", ns, "get", "pods", "-o", "wide")
		logs, _, _ := m.Kubectl(ctx, "-n", ns, "logs", "-l", "app.kubernetes.io/name=backhaul-agent", "--tail=20", "--all-containers")
		return string(b), fmt.Errorf("onboard.sh for %s: %w\n%s\n%s\n%s", m.Name, err, b, pods, logs)
	}
	return string(b), nil
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

// ctl runs backhaulctl against the host cluster as its admin.
func (e *environment) ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.ctlBin, append([]string{"--kubeconfig", e.hostKubeconfig, "--namespace", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// callerKubeconfig writes (once per cluster) a kubeconfig that reaches
// cluster through the hub's gateway as fleet-admin, and returns its path.
func (e *environment) callerKubeconfig(t testing.TB, cluster string) string {
	t.Helper()
	path := filepath.Join(e.dir, "caller-"+cluster+".kubeconfig")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	ca, err := os.ReadFile(e.hubCAFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s/clusters/%[1]s
    certificate-authority-data: %[3]s
users:
- name: fleet-admin
  user:
    token: %[4]s
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: fleet-admin}
current-context: %[1]s
`, cluster, e.hubURL, base64.StdEncoding.EncodeToString(ca), e.adminToken)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs the real kubectl, in the root namespace, against cluster
// through the hub; it returns combined output.
func (e *environment) kubectl(ctx context.Context, t testing.TB, cluster string, args ...string) (string, error) {
	t.Helper()
	cmd := e.kubectlCmd(ctx, t, cluster, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlCmd is the command [environment.kubectl] runs, to start or wire
// up as the test needs (a pty, a pipe).
func (e *environment) kubectlCmd(ctx context.Context, t testing.TB, cluster string, args ...string) *exec.Cmd {
	t.Helper()
	return exec.CommandContext(ctx, e.bins.Kubectl, append([]string{
		"--kubeconfig", e.callerKubeconfig(t, cluster),
		"--cache-dir", filepath.Join(e.dir, "kubectl-cache"),
	}, args...)...)
}

// clusterCondition is the status of condition typ of Cluster name.
func (e *environment) clusterCondition(ctx context.Context, name, typ string) string {
	out, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io", name, "-o",
		fmt.Sprintf(`jsonpath={.status.conditions[?(@.type==%q)].status}`, typ))
	if err != nil {
		return "error: " + strings.TrimSpace(out)
	}
	return out
}
