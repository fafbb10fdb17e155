package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// NodeRunDir holds each node's sockets and containerd state, one
	// directory a node (unix socket paths must stay short).
	NodeRunDir = "/run/backhaul-node"
	// PauseImage is the sandbox image every node's containerd uses; `make
	// node-images` builds it from upstream's pause.c.
	PauseImage = "registry.k8s.io/pause:3.10.2"
	// NodeReadyTimeout bounds how long [StartNode] waits for the Node to
	// report Ready.
	NodeReadyTimeout = 3 * time.Minute
	// ServiceCIDR is every member's Service range (kube-apiserver's
	// --service-cluster-ip-range in [StartMember]).
	ServiceCIDR = "10.96.0.0/16"
	// ClusterCIDR holds every node's Pod range: node Index i gets
	// 10.244.i.0/24 ([NodePodCIDR]).
	ClusterCIDR = "10.244.0.0/16"

	cgroupPrefix = "backhaul-node-"
)

// cgroupControllers are the cgroup v1 hierarchies a node's Pods are
// placed in; each gets a <root>/backhaul-node-NAME directory the kubelet
// uses as its cgroupRoot.
var cgroupControllers = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"}

// NodeConfig describes a real node: containerd, the kubelet and
// kube-proxy, with Pods on a CNI bridge, in a network namespace that is
// the node's host network.
type NodeConfig struct {
	Name  string // the Node's name; a DNS label, unique on this machine
	Index int    // 1..254, picks the Pod range 10.244.<Index>.0/24; unique on this machine
	// Member is the cluster the node joins. The node runs in Netns, or
	// in the member's own namespace when Netns is nil (a single-node
	// cluster, as kind makes); elsewhere it reaches the API server at the
	// member's ExternalURL, which the member's firewall must admit.
	Member *Member
	Netns  *Netns
	Dir    string // data, certificates and logs
	// Images are archives (`docker save`, see [SaveImages]) imported into
	// the node's containerd before the kubelet starts: no registry is
	// reachable, so Pods use only these (imagePullPolicy IfNotPresent).
	Images []string
	Labels map[string]string
	Taints []string // key[=value]:Effect, as kubelet's --register-with-taints
}

// Node is a running real node. Stop it with [Node.Stop], or let
// [Member.Stop] do it.
type Node struct {
	Name    string
	Netns   *Netns
	Dir     string
	IP      netip.Addr   // the node's InternalIP (its namespace's address)
	PodCIDR netip.Prefix // 10.244.<Index>.0/24
	Socket  string       // containerd's socket

	member  *Member
	bins    NodeBinaries
	runDir  string
	logDir  string
	cgroup  string // cgroupRoot, /backhaul-node-NAME
	lock    *os.File
	mu      sync.Mutex
	procs   map[string]*Process // containerd, kubelet, kube-proxy
	stopped bool
	stopErr error
}

// NodePodCIDR is the Pod range of the node with index i.
func NodePodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// StartNode starts containerd, the kubelet and kube-proxy for a node of
// cfg.Member and waits until the Node is Ready. On failure everything
// started is torn down and the error carries the logs' tails.
func StartNode(ctx context.Context, cfg NodeConfig) (_ *Node, err error) {
	if !validMemberName(cfg.Name) {
		return nil, fmt.Errorf("node: invalid name %q", cfg.Name)
	}
	if cfg.Index < 1 || cfg.Index > 254 {
		return nil, fmt.Errorf("node %s: index %d out of range 1..254", cfg.Name, cfg.Index)
	}
	if cfg.Member == nil || cfg.Dir == "" {
		return nil, fmt.Errorf("node %s: Member and Dir are required", cfg.Name)
	}
	bins, err := LocateNodeBinaries()
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	ns := cfg.Netns
	if ns == nil {
		ns = cfg.Member.Netns
	}
	lock, err := tryLock("node-" + cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
	}
	n := &Node{
		Name:    cfg.Name,
		Netns:   ns,
		Dir:     dir,
		IP:      ns.NSIP,
		PodCIDR: NodePodCIDR(cfg.Index),
		member:  cfg.Member,
		bins:    bins,
		runDir:  filepath.Join(NodeRunDir, cfg.Name),
		logDir:  filepath.Join(dir, "logs"),
		cgroup:  "/" + cgroupPrefix + cfg.Name,
		lock:    lock,
		procs:   map[string]*Process{},
	}
	n.Socket = filepath.Join(n.runDir, "containerd.sock")
	// Whatever a crashed run left under this name goes first.
	if err := cleanupNode(cfg.Name); err != nil {
		lock.Close()
		return nil, fmt.Errorf("node %s: clean up a previous run: %w", cfg.Name, err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("node %s: %w\n%s", cfg.Name, err, n.Logs())
			_ = n.Stop()
		}
	}()
	if err := cfg.Member.addNode(n); err != nil {
		return nil, err
	}
	if err := n.prepare(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range cfg.Images {
		if err := n.ImportImages(ctx, img); err != nil {
			return nil, err
		}
	}
	server := cfg.Member.InternalURL
	if ns != cfg.Member.Netns {
		server = cfg.Member.ExternalURL
	}
	if err := n.startKubelet(ctx, server, cfg.Labels, cfg.Taints); err != nil {
		return nil, err
	}
	if err := n.startKubeProxy(ctx, server); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// prepare makes the node's directories and cgroups, its CNI network and
// containerd configuration, and lets its Pods reach the node's own
// addresses (the API server behind the kubernetes Service, when it runs
// here) through the namespace's inbound firewall.
func (n *Node) prepare() error {
	for _, d := range []string{n.Dir, n.logDir, n.runDir, filepath.Join(n.Dir, "cni"), filepath.Join(n.Dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The run directory names its data directory, so a later run can
	// clean up after a crashed one ([CleanupStaleNodes]).
	if err := os.WriteFile(filepath.Join(n.runDir, "dir"), []byte(n.Dir), 0o644); err != nil {
		return err
	}
	if err := makeCgroup(n.cgroup); err != nil {
		return err
	}
	if err := n.Netns.AllowInboundFrom(n.PodCIDR); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "backhaul-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
`, n.PodCIDR.String(), filepath.Join(n.runDir, "ipam"))
	if err := os.WriteFile(filepath.Join(n.Dir, "cni", "10-bridge.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	// Plugins this test node does not use are off, so their absence or
	// failure cannot stall start-up.
	containerd := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (this machine's sandbox drops it) a
  # container's oom_score_adj may not go below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, filepath.Join(n.Dir, "containerd"), filepath.Join(n.runDir, "state"), n.Socket,
		filepath.Join(n.runDir, "ttrpc.sock"), PauseImage, filepath.Join(n.runDir, "runc"), n.bins.CNIDir, filepath.Join(n.Dir, "cni"))
	return os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(containerd), 0o644)
}

func (n *Node) start(ctx context.Context, name, bin string, args ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return errors.New("node is stopped")
	}
	p, err := Start(ctx, name, n.logDir, n.Netns.NetCommand(context.WithoutCancel(ctx), bin, args...))
	if err != nil {
		return err
	}
	n.procs[name] = p
	return nil
}

func (n *Node) startContainerd(ctx context.Context) error {
	if err := n.start(ctx, "containerd", n.bins.Containerd, "--config", filepath.Join(n.Dir, "containerd.toml")); err != nil {
		return err
	}
	return WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if err := n.exited("containerd"); err != nil {
			return err
		}
		_, err := run(ctx, nil, n.bins.Ctr, "--address", n.Socket, "version")
		return err
	})
}

// ImportImages imports an image archive (`docker save` output) into the
// node's containerd, where the kubelet finds it.
func (n *Node) ImportImages(ctx context.Context, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("import images: %w", err)
	}
	defer f.Close()
	if _, err := run(ctx, f, n.bins.Ctr, "--address", n.Socket, "--namespace", "k8s.io", "images", "import", "--no-unpack=false", "-"); err != nil {
		return fmt.Errorf("import images from %s: %w", archive, err)
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context, server string, labels map[string]string, taints []string) error {
	ca := n.member.CA
	pki := filepath.Join(n.Dir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		return err
	}
	nodeCA := ca.In(pki)
	kubeconfig, err := certKubeconfig(nodeCA, filepath.Join(n.Dir, "kubelet.kubeconfig"), "kubelet-client", server,
		"system:node:"+n.Name, []string{"system:nodes"})
	if err != nil {
		return err
	}
	servingCert, servingKey, err := nodeCA.Serving("kubelet", []string{n.IP.String(), n.Name, "localhost", "127.0.0.1"})
	if err != nil {
		return err
	}
	resolv := filepath.Join(n.Dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions ndots:1\n"), 0o644); err != nil {
		return err
	}
	// cgroup v1 (this machine's kernel mounts v1): kubelet 1.36 refuses
	// it unless failCgroupV1 is false, and with containerd 1.x it takes
	// the cgroup driver from here. Every node on the machine gets its own
	// cgroupRoot, so their Pods never share a cgroup. Image garbage
	// collection is off: the imported images cannot be pulled again.
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: %q
failSwapOn: false
address: %q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %q
tlsPrivateKeyFile: %q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization:
  mode: Webhook
podLogsDir: %q
resolvConf: %q
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%", "nodefs.inodesFree": "1%%"}
serializeImagePulls: false
protectKernelDefaults: false
nodeStatusUpdateFrequency: 5s
fileCheckFrequency: 5s
shutdownGracePeriod: 0s
`, n.cgroup, "unix://"+n.Socket, n.IP.String(), servingCert, servingKey, ca.CertFile,
		filepath.Join(n.Dir, "pod-logs"), resolv)
	cfgFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		return err
	}
	args := []string{
		"--config=" + cfgFile,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + filepath.Join(n.Dir, "kubelet"),
		"--cert-dir=" + pki,
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP.String(),
		"--v=1",
	}
	if len(labels) > 0 {
		var l []string
		for k, v := range labels {
			l = append(l, k+"="+v)
		}
		sort.Strings(l)
		args = append(args, "--node-labels="+strings.Join(l, ","))
	}
	if len(taints) > 0 {
		args = append(args, "--register-with-taints="+strings.Join(taints, ","))
	}
	return n.start(ctx, "kubelet", n.bins.Kubelet, args...)
}

func (n *Node) startKubeProxy(ctx context.Context, server string) error {
	nodeCA := n.member.CA.In(filepath.Join(n.Dir, "pki"))
	kubeconfig, err := certKubeconfig(nodeCA, filepath.Join(n.Dir, "kube-proxy.kubeconfig"), "kube-proxy", server,
		"system:kube-proxy", nil)
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %q
hostnameOverride: %q
clusterCIDR: %q
bindAddress: %q
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
`, kubeconfig, n.Name, ClusterCIDR, n.IP.String())
	cfgFile := filepath.Join(n.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		return err
	}
	return n.start(ctx, "kube-proxy", n.bins.KubeProxy, "--config="+cfgFile, "--v=1")
}

// waitReady waits for the Node to report Ready, failing early when one of
// its processes exits.
func (n *Node) waitReady(ctx context.Context) error {
	return WaitFor(ctx, NodeReadyTimeout, time.Second, func() error {
		for _, name := range []string{"containerd", "kubelet", "kube-proxy"} {
			if err := n.exited(name); err != nil {
				return Permanent(err)
			}
		}
		out, _, err := n.member.Kubectl(ctx, "get", "node", n.Name, "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("node %s Ready=%q", n.Name, out)
		}
		return nil
	})
}

func (n *Node) exited(name string) error {
	n.mu.Lock()
	p := n.procs[name]
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.Exited():
		return fmt.Errorf("%s exited: %v", name, p.Err())
	default:
		return nil
	}
}

// Process returns the node's process called name ("containerd",
// "kubelet" or "kube-proxy"), or nil.
func (n *Node) Process(name string) *Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs[name]
}

// StopKubelet stops the kubelet alone (the node goes NotReady; its Pods
// keep running), for tests of a lost node. [Node.StartKubelet] is not
// offered: stop the whole node instead.
func (n *Node) StopKubelet() {
	if p := n.Process("kubelet"); p != nil {
		p.Stop()
	}
}

// Stop stops the kubelet, kills every container of the node (all run in
// its cgroupRoot), stops kube-proxy and containerd and its shims, and
// unmounts and removes what they left (mounts, Pod network namespaces,
// cgroups). Data and logs stay in Dir. It is idempotent.
func (n *Node) Stop() error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return n.stopErr
	}
	n.stopped = true
	procs := n.procs
	n.mu.Unlock()
	if p := procs["kubelet"]; p != nil {
		p.Stop()
	}
	for _, name := range []string{"kube-proxy", "containerd"} {
		if p := procs[name]; p != nil {
			p.Stop()
		}
	}
	err := cleanupNode(n.Name)
	n.mu.Lock()
	n.stopErr = err
	n.mu.Unlock()
	if n.lock != nil {
		n.lock.Close()
	}
	return err
}

// Logs returns the tails of the node's logs, for failure messages.
func (n *Node) Logs() string {
	var b strings.Builder
	for _, l := range []struct {
		name  string
		lines int
	}{{"containerd", 10}, {"kubelet", 30}, {"kube-proxy", 10}} {
		path := filepath.Join(n.logDir, l.name+".log")
		fmt.Fprintf(&b, "--- %s (last %d lines of %s) ---\n%s\n", l.name, l.lines, path, tailFile(path, l.lines))
	}
	return b.String()
}

// CleanupStaleNodes removes what nodes of crashed runs left behind
// (containers, shims, mounts, cgroups), skipping nodes a live process
// owns. Call it at the start of a suite that starts nodes.
func CleanupStaleNodes() error {
	entries, err := os.ReadDir(NodeRunDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		lock, err := tryLock("node-" + e.Name())
		if errors.Is(err, errLocked) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, cleanupNode(e.Name()))
		lock.Close()
	}
	return errors.Join(errs...)
}

// cleanupNode kills the node's containers (every process in its cgroups)
// and the containerd shims serving its socket, unmounts everything under
// its run and data directories and removes its cgroups and run directory.
// The caller holds the node's lock and has stopped its processes.
func cleanupNode(name string) error {
	runDir := filepath.Join(NodeRunDir, name)
	cgroup := "/" + cgroupPrefix + name
	var dirs []string
	if b, err := os.ReadFile(filepath.Join(runDir, "dir")); err == nil {
		dirs = append(dirs, string(b))
	}
	dirs = append(dirs, runDir)
	var errs []error
	// Containers first, then the shims that supervise them (a shim
	// whose container is gone exits by itself, but one may be mid-start).
	for range 3 {
		pids := append(cgroupPIDs(cgroup), shimPIDs(runDir)...)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for deadline := time.Now().Add(5 * time.Second); len(alive(pids)) > 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	errs = append(errs, unmountUnder(dirs...))
	if len(dirs) > 1 {
		errs = append(errs, removeLogLinks(dirs[0]))
	}
	errs = append(errs, removeCgroup(cgroup))
	if err := os.RemoveAll(runDir); err != nil {
		errs = append(errs, err)
	}
	for _, d := range dirs[:len(dirs)-1] {
		// Writable layers and volumes can be large; the logs stay.
		for _, sub := range []string{"containerd", "kubelet"} {
			if err := os.RemoveAll(filepath.Join(d, sub)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeLogLinks removes the kubelet's links in /var/log/containers to
// container logs under dir (it makes them on every node of the machine).
func removeLogLinks(dir string) error {
	const links = "/var/log/containers"
	entries, err := os.ReadDir(links)
	if err != nil {
		return nil // none made
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(links, e.Name())
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, dir+"/") {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupPIDs lists the processes in cgroup (in any v1 hierarchy) and its
// descendants.
func cgroupPIDs(cgroup string) []int {
	seen := map[int]bool{}
	for _, c := range cgroupControllers {
		root := filepath.Join("/sys/fs/cgroup", c, cgroup)
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for pid := range seen {
		pids = append(pids, pid)
	}
	return pids
}

// shimPIDs lists containerd-shim processes started for the containerd
// whose files live in runDir (their command line names its socket).
func shimPIDs(runDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") &&
			slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, runDir+"/") }) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount point at or below any of dirs,
// deepest first (lazily, so a mount still held by a dying process goes
// when it does).
func unmountUnder(dirs ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				points = append(points, mp)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// makeCgroup creates cgroup in every v1 hierarchy the kubelet uses; a
// new cpuset cgroup gets its parent's CPUs and memory nodes, without
// which no process can join it.
func makeCgroup(cgroup string) error {
	for _, c := range cgroupControllers {
		base := filepath.Join("/sys/fs/cgroup", c)
		if _, err := os.Stat(base); err != nil {
			continue // hierarchy not mounted here
		}
		dir := filepath.Join(base, cgroup)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if c == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(base, f))
				if err != nil {
					return fmt.Errorf("cgroup %s: %w", dir, err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", dir, err)
				}
			}
		}
	}
	return nil
}

// removeCgroup removes cgroup and its descendants (deepest first) from
// every hierarchy; they must hold no processes.
func removeCgroup(cgroup string) error {
	var errs []error
	for _, c := range cgroupControllers {
		root := filepath.Join("/sys/fs/cgroup", c, cgroup)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// SaveImages writes the docker images refs into one archive (`docker
// save`), for [NodeConfig.Images].
func SaveImages(ctx context.Context, archive string, refs ...string) error {
	if _, err := run(ctx, nil, "docker", append([]string{"save", "-o", archive}, refs...)...); err != nil {
		return fmt.Errorf("save images (make image node-images builds them): %w", err)
	}
	return nil
}

// TaskPID is the host PID of container id's main process, from the
// node's containerd.
func (n *Node) TaskPID(ctx context.Context, id string) (string, error) {
	out, err := run(ctx, nil, n.bins.Ctr, "--address", n.Socket, "--namespace", "k8s.io", "tasks", "ls")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("node %s: no task %s", n.Name, id)
}
