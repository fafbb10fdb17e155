package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// The HA section's clusters: a host cluster for --registry=kube and, for
// the forwarding figure, a member behind a real agent. Indexes 91 and 92
// sit beside the kube section's 90; e2e uses 40 and up to the 50s.
const (
	haHostName    = "ha-host"
	haHostIndex   = 91
	haMemberName  = "ha-member"
	haMemberIndex = 92
	// haNamespace is deploy/hub's namespace, where the replicas keep their
	// HubReplicas, the Lease and the peer EndpointSlices.
	haNamespace = "backhaul-system"
	// haPeersService is deploy/hub's headless peer Service; no endpoint
	// controller runs in the harness, so the bench writes its slices.
	haPeersService = "backhaul-hub-peers"
)

// haHost is the host cluster the replicas share: its API is open to the
// root namespace, where the replicas run, and deploy/hub is applied.
type haHost struct {
	member     *harness.Member
	kubectlBin string
	// kubeconfig is the host's admin kubeconfig on its external address;
	// the replicas use it too (the bench does not exercise RBAC).
	kubeconfig string
}

// startHAMembers starts the host cluster and, when withMember is set, the
// forwarding figure's member, side by side. Whatever started is returned
// for the caller to stop, error or not.
func startHAMembers(ctx context.Context, dir string, withMember bool) (host *harness.Member, member *harness.Member, err error) {
	for _, n := range []string{haHostName, haMemberName} {
		if _, err := harness.CleanupStale(harness.NetnsPrefix + n); err != nil {
			return nil, nil, err
		}
	}
	if _, err := harness.LocateBinaries(); err != nil {
		return nil, nil, fmt.Errorf("%w (run `make kube-bins deps`)", err)
	}
	var wg sync.WaitGroup
	var hostErr, memberErr error
	wg.Go(func() {
		host, hostErr = harness.StartMember(ctx, harness.MemberConfig{Name: haHostName, Index: haHostIndex, Dir: filepath.Join(dir, haHostName)})
	})
	if withMember {
		wg.Go(func() {
			member, memberErr = harness.StartMember(ctx, harness.MemberConfig{Name: haMemberName, Index: haMemberIndex, Dir: filepath.Join(dir, haMemberName)})
		})
	}
	wg.Wait()
	if hostErr != nil {
		return host, member, hostErr
	}
	return host, member, memberErr
}

// newHAHost opens the host's API to the root namespace, applies deploy/hub
// and lets the bench's callers proxy to clusters.
func newHAHost(ctx context.Context, m *harness.Member, dir string) (*haHost, error) {
	bins, err := harness.LocateBinaries()
	if err != nil {
		return nil, err
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := m.Netns.AllowInbound(harness.APIServerPort); err != nil {
		return nil, err
	}
	h := &haHost{member: m, kubectlBin: bins.Kubectl, kubeconfig: filepath.Join(dir, "host.kubeconfig")}
	if err := harness.WriteKubeconfig(h.kubeconfig, m.ExternalURL, m.CAPEM, m.AdminToken); err != nil {
		return nil, err
	}
	// The shipped hub base, as the fleet suite applies it: CRDs, the
	// namespace, RBAC and the two Services (the Deployment stays pending:
	// no kubelet runs).
	if out, err := h.kubectl(ctx, "", "apply", "--server-side", "-k", filepath.Join(root, "deploy/hub")); err != nil {
		return nil, fmt.Errorf("apply deploy/hub: %w: %s", err, out)
	}
	err = harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := h.kubectl(ctx, "", "get", "clusters.backhaul.io,hubreplicas.backhaul.io", "-A")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("backhaul CRDs not served: %w", err)
	}
	// Callers in callerGroup may proxy to every cluster (the replicas run
	// SubjectAccessReview against the host, as deployed).
	rbac := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: backhaul-bench-proxy}
rules:
- {apiGroups: [backhaul.io], resources: [clusters/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: backhaul-bench-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: backhaul-bench-proxy}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: %q}]
`, callerGroup)
	if out, err := h.kubectl(ctx, rbac, "apply", "-f", "-"); err != nil {
		return nil, fmt.Errorf("host RBAC: %w: %s", err, out)
	}
	return h, nil
}

// kubectl runs kubectl against the host as its admin, stdin as given.
func (h *haHost) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.kubectlBin, append([]string{"--kubeconfig", h.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// peerIP is where replicas listen for peers: the root-namespace end of the
// host's veth, an address of this machine that, unlike loopback, an
// EndpointSlice may name.
func (h *haHost) peerIP() string { return h.member.Netns.HostIP.String() }

// publishPeer writes the EndpointSlice an endpoint controller would write
// for replica's Pod: one per replica, because each listens for peers on
// its own port.
func (h *haHost) publishPeer(ctx context.Context, replica string, port int) error {
	slice := fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-%s
  namespace: %s
  labels: {kubernetes.io/service-name: %s}
addressType: IPv4
ports: [{name: peer, port: %d, protocol: TCP}]
endpoints:
- addresses: [%q]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: %s, namespace: %s}
`, haPeersService, replica, haNamespace, haPeersService, port, h.peerIP(), replica, haNamespace)
	if out, err := h.kubectl(ctx, slice, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("peer EndpointSlice of %s: %w: %s", replica, err, out)
	}
	return nil
}

// withdrawPeer deletes replica's EndpointSlice, as the endpoint controller
// does once its Pod is gone.
func (h *haHost) withdrawPeer(ctx context.Context, replica string) error {
	out, err := h.kubectl(ctx, "", "-n", haNamespace, "delete", "endpointslice", haPeersService+"-"+replica, "--ignore-not-found", "--wait=false")
	if err != nil {
		return fmt.Errorf("delete peer EndpointSlice of %s: %w: %s", replica, err, out)
	}
	return nil
}

// haFiles are what every replica shares: one CA (agent and replica
// certificates, --ca-cert-file), one serving certificate, the callers and
// the agents' static tokens.
type haFiles struct {
	ca       *harness.CA
	certFile string
	keyFile  string
	callers  string
	agents   string
}

// writeHAFiles issues the shared CA and serving certificate (for hosts
// besides loopback) and writes the caller file.
func writeHAFiles(dir string, hosts []string) (*haFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := harness.NewCA(dir, "hub-ca")
	if err != nil {
		return nil, err
	}
	f := &haFiles{ca: ca, callers: filepath.Join(dir, "callers.csv"), agents: filepath.Join(dir, "agent-tokens.csv")}
	if f.certFile, f.keyFile, err = ca.Serving("hub", append([]string{"127.0.0.1", "localhost"}, hosts...)); err != nil {
		return nil, err
	}
	callers := fmt.Sprintf("%s,%s,%s,%q\n", callerToken, callerUser, callerUser, callerGroup)
	if err := os.WriteFile(f.callers, []byte(callers), 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

// writeAgentTokens gives each cluster a fresh token in the agents file
// ("token,cluster" lines) and returns them in the clusters' order.
func (f *haFiles) writeAgentTokens(clusters []string) ([]string, error) {
	tokens := make([]string, len(clusters))
	var b strings.Builder
	raw := make([]byte, 16)
	for i, c := range clusters {
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		tokens[i] = hex.EncodeToString(raw)
		fmt.Fprintf(&b, "%s,%s\n", tokens[i], c)
	}
	return tokens, os.WriteFile(f.agents, []byte(b.String()), 0o600)
}

// loadAverage is /proc/loadavg's three averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
