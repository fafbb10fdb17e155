package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// ambiguousSeries counts bare node addresses refused because several
// clusters advertise them.
const ambiguousSeries = `backhaul_hub_errors_total{reason="ambiguous_node_address"}`

// socketHub is a hub of a test's own, knowing clusters m1 and m2, that
// also serves a CONNECT socket per cluster (--connect-socket-dir). The
// suite's hub does not, and its sessions are shared by every test: the
// node agents here connect to this one instead.
type socketHub struct {
	*harness.Hub
	dir string
}

// socket is cluster's own CONNECT socket.
func (h *socketHub) socket(cluster string) string { return filepath.Join(h.dir, cluster+".sock") }

func startSocketHub(t *testing.T, e *environment) *socketHub {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	sockets := filepath.Join(dir, "sockets")
	var hostIPs []string
	for _, m := range e.members {
		hostIPs = append(hostIPs, m.Netns.HostIP.String())
	}
	h, err := harness.StartHub(ctx, harness.HubConfig{
		Binary: filepath.Join(filepath.Dir(e.agentBin), "backhaul-hub"), Dir: filepath.Join(dir, "hub"),
		HostIPs: hostIPs, Clusters: []string{"m1", "m2"}, Callers: callers,
		Args: []string{"--connect-socket-dir", sockets},
	})
	if h != nil {
		t.Cleanup(h.Stop)
	}
	require.NoError(t, err)
	sh := &socketHub{Hub: h, dir: sockets}
	require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		for _, c := range []string{"m1", "m2"} {
			if _, err := os.Stat(sh.socket(c)); err != nil {
				return err
			}
		}
		return nil
	}), "a socket for every cluster")
	return sh
}

// siteNode gives member site a node at ip whose stand-in service on
// ip:10250 answers says, and starts a node-mode agent advertising ip that
// connects to h. It returns the agent.
func siteNode(t *testing.T, e *environment, h *socketHub, site, ip, says string) *harness.Process {
	t.Helper()
	ctx := context.Background()
	m := e.members[site]
	out, err := m.Netns.Command(ctx, "ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() { _ = m.Netns.Command(context.Background(), "ip", "addr", "del", ip+"/32", "dev", "lo").Run() })
	cmd := m.Netns.Command(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envServe+"="+ip+":10250", envServeSays+"="+says)
	svc, err := harness.Start(ctx, "svc-"+site+"-"+ip, m.Dir, cmd)
	require.NoError(t, err)
	t.Cleanup(svc.Stop)
	node := site + "-node-" + strings.ReplaceAll(ip, ".", "-")
	p, err := harness.StartAgent(ctx, h.Hub, m, harness.AgentConfig{
		Binary: e.agentBin, Name: "agent-" + node, Cluster: site,
		Args: []string{"--node-name", node, "--node-addresses", ip},
	})
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	return p
}

// nodeHost is ip of cluster in the CONNECT host form.
func nodeHost(ip, cluster string) string {
	return strings.ReplaceAll(ip, ".", "-") + ".node." + cluster + ".cluster.backhaul:10250"
}

// waitReached polls CONNECT target at network addr until it answers 200,
// and returns the body.
func waitReached(t *testing.T, network, addr, target, token string) string {
	t.Helper()
	var status, body string
	require.NoError(t, harness.WaitFor(context.Background(), 20*time.Second, 200*time.Millisecond, func() error {
		status, body = connectGetVia(t, network, addr, target, token)
		if !strings.HasPrefix(status, "200") {
			return fmt.Errorf("CONNECT %s on %s: %s", target, addr, status)
		}
		return nil
	}))
	return body
}

// Two edge sites, each in its own network namespace, reuse node address
// 10.252.5.1, each with its own service there. Through the hub each
// per-cluster form (the host form over TCP, the cluster's own socket with
// the bare address) reaches its own site's service; the bare address on
// the shared listeners is refused as ambiguous, counted, and routed again
// once only one site advertises it.
func TestSameNodeIPTwoSites(t *testing.T) {
	e := requireEnv(t)
	h := startSocketHub(t, e)
	const ip = "10.252.5.1"
	token := callers["admin"].Token
	agents := map[string]*harness.Process{}
	for _, site := range []string{"m1", "m2"} {
		agents[site] = siteNode(t, e, h, site, ip, "node of "+site)
	}

	for _, site := range []string{"m1", "m2"} {
		assert.Equal(t, "node of "+site, waitReached(t, "tcp", h.ConnectAddr, nodeHost(ip, site), token), "host form of %s over TCP", site)
		status, body := connectGetVia(t, "unix", h.socket(site), ip+":10250", "")
		require.True(t, strings.HasPrefix(status, "200"), "bare address on %s's socket: %s", site, status)
		assert.Equal(t, "node of "+site, body, "bare address on %s's socket", site)
		status, body = connectGetVia(t, "unix", h.socket(site), nodeHost(ip, site), "")
		require.True(t, strings.HasPrefix(status, "200"), "host form on %s's socket: %s", site, status)
		assert.Equal(t, "node of "+site, body)
	}

	before := counterAt(t, h.AdminURL, ambiguousSeries)
	for _, l := range []struct{ network, addr, token string }{{"tcp", h.ConnectAddr, token}, {"unix", h.ConnectUDS, ""}} {
		status, _ := connectGetVia(t, l.network, l.addr, ip+":10250", l.token)
		assert.True(t, strings.HasPrefix(status, "409 10.252.5.1 is advertised by nodes of 2 clusters (you may reach: m1, m2); name the cluster: 10-252-5-1.node.m1.cluster.backhaul:10250"),
			"bare address on the shared %s listener: %s", l.network, status)
	}
	assert.Equal(t, before+2, counterAt(t, h.AdminURL, ambiguousSeries), "each ambiguous CONNECT is counted")

	// A cluster's socket serves that cluster only.
	for _, target := range []string{nodeHost(ip, "m2"), "m2.cluster.backhaul:443"} {
		status, _ := connectGetVia(t, "unix", h.socket("m1"), target, "")
		assert.True(t, strings.HasPrefix(status, "403 "+target+" is a target of cluster m2; this socket serves cluster m1 only"), "%s on m1's socket: %s", target, status)
	}

	// With one site's node gone, the address is unique again.
	agents["m2"].Stop()
	require.NoError(t, harness.WaitFor(context.Background(), 20*time.Second, 200*time.Millisecond, func() error {
		if status, body := connectGetVia(t, "tcp", h.ConnectAddr, ip+":10250", token); body != "node of m1" {
			return fmt.Errorf("bare address after m2's node left: %s %q", status, body)
		}
		return nil
	}))
	status, _ := connectGetVia(t, "tcp", h.ConnectAddr, nodeHost(ip, "m2"), token)
	assert.True(t, strings.HasPrefix(status, "503 cluster m2 is not connected"), "m2 had only that node's agent on this hub: %s", status)
}

// An agent of site m2 (its own valid credentials) advertises site m1's
// node address, after m1's agent did, and serves its own look-alike
// there. Traffic addressed to m1's node by the per-cluster forms still
// reaches m1's node, and the bare address, which once went to the newest
// claim, is refused rather than handed to the attacker.
func TestAgentCannotCaptureAnotherSitesNode(t *testing.T) {
	e := requireEnv(t)
	h := startSocketHub(t, e)
	const ip = "10.252.4.1"
	token := callers["admin"].Token
	siteNode(t, e, h, "m1", ip, "node of m1")
	require.Equal(t, "node of m1", waitReached(t, "tcp", h.ConnectAddr, nodeHost(ip, "m1"), token))

	siteNode(t, e, h, "m2", ip, "attacker in m2")
	// The attacker's claim is registered once the bare form turns
	// ambiguous.
	require.NoError(t, harness.WaitFor(context.Background(), 20*time.Second, 200*time.Millisecond, func() error {
		status, body := connectGetVia(t, "tcp", h.ConnectAddr, ip+":10250", token)
		require.NotEqual(t, "attacker in m2", body, "the bare address was captured")
		if !strings.HasPrefix(status, "409 ") {
			return fmt.Errorf("the attacker's claim is not registered yet: %s", status)
		}
		return nil
	}))

	for i := range 5 {
		assert.Equal(t, "node of m1", waitReached(t, "tcp", h.ConnectAddr, nodeHost(ip, "m1"), token), "host form, attempt %d", i)
		status, body := connectGetVia(t, "unix", h.socket("m1"), ip+":10250", "")
		require.True(t, strings.HasPrefix(status, "200"), status)
		assert.Equal(t, "node of m1", body, "m1's socket, attempt %d", i)
		status, body = connectGetVia(t, "unix", h.ConnectUDS, ip+":10250", "")
		assert.True(t, strings.HasPrefix(status, "409 "), "shared socket, attempt %d: %s %q", i, status, body)
	}
}
