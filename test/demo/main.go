// Command demo runs Backhaul on one machine: a hub in the root network
// namespace and two member clusters (etcd + kube-apiserver + agent), each in
// a network namespace that refuses inbound connections. It writes a
// kubeconfig with one context per cluster through the hub, prints commands
// to try, and stops everything on Ctrl-C. `make demo` runs it.
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
	flag.Parse()
	if err := run(*smoke, *port); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(smoke bool, port int) (err error) {
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

	names := []string{"edge", "idc"}
	step("starting member clusters %s (etcd + kube-apiserver %s, each in a firewalled network namespace)", strings.Join(names, ", "), "v1.36")
	members := make([]*harness.Member, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			members[i], errs[i] = harness.StartMember(ctx, harness.MemberConfig{Name: n, Index: 60 + i, Dir: filepath.Join(dir, n)})
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
	<-ctx.Done()
	return nil
}
