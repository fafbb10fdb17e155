// Command demo runs Backhaul on one machine: a hub in the root network
// namespace and two member clusters (etcd + kube-apiserver + agent), each in
// a network namespace that refuses inbound connections. It writes a
// kubeconfig with one context per cluster through the hub, prints commands
// to try, and stops everything on Ctrl-C. `make demo` runs it; with
// -real-nodes (`make demo REAL_NODES=1`) each member also gets a
// controller manager, a scheduler and a real node (containerd, kubelet,
// kube-proxy) running a busybox Deployment to exec into through the hub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"backhaul.io/backhaul/test/harness"
)

func main() {
	smoke := flag.Bool("smoke", false, "start everything, check both clusters answer through the hub, then stop (for tests)")
	port := flag.Int("port", 8443, "hub port (0: any free port)")
	realNodes := flag.Bool("real-nodes", false, "give each member a real node (containerd + kubelet) running a busybox Deployment (needs `make node-images`)")
	flag.Parse()
	if err := run(*smoke, *port, *realNodes); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// busybox is the image of the demo's workload on real nodes.
const busybox = "backhaul-e2e/busybox:1.35"

func run(smoke bool, port int, realNodes bool) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo creates network namespaces and needs root")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "_output", "demo")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var cleanups []func()
	defer func() {
		step("stopping everything")
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	step("locating kube-apiserver, kubectl and etcd")
	bins, err := harness.LocateBinaries()
	if err != nil {
		return fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	// After `make build` this go build is a no-op that keeps its binaries.
	step("building backhaul-hub and backhaul-agent %s (go build, as `make build` does)", harness.BuildVersion())
	hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
	if err != nil {
		return err
	}
	if port != 0 {
		if _, err := exec.LookPath("ss"); err == nil {
			if out, _ := exec.Command("ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output(); len(strings.TrimSpace(string(out))) > 0 {
				step("port %d is busy; using a free port", port)
				port = 0
			}
		}
	}

	var images string
	if realNodes {
		step("saving the node images (pause, busybox) for the nodes' containerd")
		images = filepath.Join(dir, "images.tar")
		if err := harness.SaveImages(ctx, images, harness.PauseImage, busybox); err != nil {
			return err
		}
	}

	names := []string{"edge", "idc"}
	what := "etcd + kube-apiserver"
	if realNodes {
		what += " + controller manager + scheduler + a node"
	}
	step("starting member clusters %s (%s, v1.36, each in a firewalled network namespace)", strings.Join(names, ", "), what)
	members := make([]*harness.Member, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := harness.MemberConfig{Name: n, Index: 60 + i, Dir: filepath.Join(dir, n)}
			if realNodes {
				cfg.APIServerArgs = []string{"--authorization-mode=Node", "--enable-admission-plugins=NodeRestriction"}
			}
			members[i], errs[i] = harness.StartMember(ctx, cfg)
			if errs[i] == nil && realNodes {
				errs[i] = startNode(ctx, members[i], bins.Kubectl, images)
			}
		}()
	}
	wg.Wait()
	for _, m := range members {
		if m != nil {
			cleanups = append(cleanups, func() { _ = m.Stop() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, m := range members {
		step("  %s ready in %s; its API server listens on %s, which the hub's namespace cannot reach", m.Name, m.StartupTime.Round(100*time.Millisecond), m.ExternalURL)
	}

	step("starting the hub")
	const token = "demo-fleet-admin-token-change-me"
	var hostIPs []string
	for _, m := range members {
		hostIPs = append(hostIPs, m.Netns.HostIP.String())
	}
	hub, err := harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(dir, "hub"), Port: port, HostIPs: hostIPs, Clusters: names,
		Callers: map[string]harness.Caller{"admin": {Token: token, User: "fleet-admin", Groups: []string{"fleet-admins"}}},
	})
	if hub != nil {
		cleanups = append(cleanups, hub.Stop)
	}
	if err != nil {
		return err
	}
	step("  hub listening on %s (metrics on %s/metrics)", hub.URL, hub.AdminURL)

	for _, m := range members {
		if _, stderr, err := m.Kubectl(ctx, "create", "clusterrolebinding", "fleet-admins", "--clusterrole=cluster-admin", "--group=fleet-admins"); err != nil {
			return fmt.Errorf("grant fleet-admins in %s: %w: %s", m.Name, err, stderr)
		}
		step("starting the agent of %s (dials out to the hub)", m.Name)
		p, err := harness.StartAgent(ctx, hub, m, harness.AgentConfig{Binary: agentBin, Cluster: m.Name})
		if err != nil {
			return err
		}
		cleanups = append(cleanups, p.Stop)
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := hub.WriteKubeconfig(kubeconfig, names, token); err != nil {
		return err
	}
	for _, n := range names {
		err := harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
			out, err := exec.CommandContext(ctx, bins.Kubectl, "--kubeconfig", kubeconfig, "--context", n, "get", "--raw", "/readyz").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("cluster %s not reachable through the hub: %w", n, err)
		}
		step("  %s answers through the hub", n)
	}
	if realNodes {
		for _, n := range names {
			out, err := exec.CommandContext(ctx, bins.Kubectl, "--kubeconfig", kubeconfig, "--context", n,
				"exec", "deploy/hello", "--", "sh", "-c", "echo hello from $(hostname)").CombinedOutput()
			if err != nil {
				return fmt.Errorf("exec into %s's container through the hub: %w: %s", n, err, out)
			}
			step("  %s: kubectl exec through the hub: %s", n, strings.TrimSpace(string(out)))
		}
	}
	if smoke {
		step("smoke check passed")
		return nil
	}

	k := fmt.Sprintf("%s --kubeconfig %s", bins.Kubectl, kubeconfig)
	fmt.Printf(`
Backhaul demo is running. Both member API servers accept no inbound
connection; every call below goes hub -> tunnel -> agent -> API server.

  %[1]s --context edge get namespaces
  %[1]s --context idc create configmap hello --from-literal=from=hub
  %[1]s --context idc get configmap hello -o yaml
  %[1]s --context edge get --raw /readyz
  %[1]s --context edge get configmaps -A --watch      # then write in the other terminal

  curl -s %[2]s/metrics | grep ^backhaul_        # hub metrics
  curl -s --cacert %[6]s -H 'Authorization: Bearer %[3]s' -H 'Accept: application/json' %[4]s/status   # connected agents

Logs: %[5]s/{hub,edge,idc}/*.log    Press Ctrl-C to stop.
`, k, hub.AdminURL, token, hub.URL, dir, hub.CA.CertFile)
	if realNodes {
		fmt.Printf(`
Each member runs a real node (containerd, kubelet): exec into its container,
follow its logs, forward a port, all through the hub:

  %[1]s --context edge get pods -o wide
  %[1]s --context edge exec -it deploy/hello -- sh
  %[1]s --context idc logs -f deploy/hello
  %[1]s --context idc port-forward deploy/hello 8080:8080   # then: wget -qO- 127.0.0.1:8080

Node logs: %[2]s/{edge,idc}/node/logs/{containerd,kubelet,kube-proxy}.log
`, k, dir)
	}
	<-ctx.Done()
	return nil
}

// startNode gives m a controller manager, a scheduler and a real node, and
// runs the Deployment "hello" on it: busybox printing a line every few
// seconds and serving HTTP on 8080.
func startNode(ctx context.Context, m *harness.Member, kubectl, images string) error {
	if err := m.StartControlPlane(ctx); err != nil {
		return err
	}
	if _, err := harness.StartNode(ctx, harness.NodeConfig{Name: m.Name + "-node", Index: m.Netns.Index, Member: m,
		Dir: filepath.Join(m.Dir, "node"), Images: []string{images}}); err != nil {
		return err
	}
	hello := `apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: ` + busybox + `
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && httpd -p 8080 -h /www && while true; do echo \"$(date) hello from $(hostname)\"; sleep 5; done"]
        ports: [{containerPort: 8080}]
`
	cmd := m.Netns.Command(ctx, kubectl, "--kubeconfig", m.AdminKubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(hello)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: deploy hello: %w: %s", m.Name, err, out)
	}
	if _, _, err := m.Kubectl(ctx, "rollout", "status", "deploy/hello", "--timeout=3m"); err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	return nil
}
