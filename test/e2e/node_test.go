package e2e

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// envServe makes the test binary a stand-in node service on that address
// (run inside a member's namespace), answering every request with it.
const envServe = "BACKHAUL_E2E_SERVE"

// envServeSays, with envServe, is what the stand-in answers instead of
// its address: two sites' nodes may share an address.
const envServeSays = "BACKHAUL_E2E_SERVE_SAYS"

// nodeRange holds the tests' node addresses (inside member namespaces).
const nodeRange = "10.252.0.0/16"

func serveNodeStandIn(addr string) int {
	says := cmp.Or(os.Getenv(envServeSays), addr)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, says)
	}), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	_ = srv.Serve(ln)
	return 0
}

// connectGet opens CONNECT target through the hub's CONNECT front end and
// sends one HTTP GET; it returns the CONNECT status line and, on 200, the
// response body.
func connectGet(t *testing.T, e *environment, target string) (status, body string) {
	t.Helper()
	return connectGetVia(t, "tcp", e.hub.ConnectAddr, target, callers["admin"].Token)
}

// connectGetVia is connectGet through the CONNECT front end listening at
// network address addr (a hub's TCP listener, or one of its Unix
// sockets, where token is "" since the socket's permissions vouch for
// the caller).
func connectGetVia(t *testing.T, network, addr, target, token string) (status, body string) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	auth := ""
	if token != "" {
		auth = "Proxy-Authorization: Bearer " + token + "\r\n"
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, auth)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	status = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)+" "))
	if resp.StatusCode != http.StatusOK {
		return status, ""
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	r2, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	defer r2.Body.Close()
	b, err := io.ReadAll(r2.Body)
	require.NoError(t, err)
	return status, string(b)
}

// Edge node pool: two node-mode agents in one site each advertise their
// node's address; CONNECT IP:PORT goes to the agent that owns the address,
// the allowlist refuses everything else with 403, and a route vanishes
// with its agent.
func TestNodeAgentsRouteByAddress(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	m := e.members["m1"]
	nodes := []struct{ name, ip string }{{"node-a", "10.252.1.1"}, {"node-b", "10.252.1.2"}}

	agents := map[string]*harness.Process{}
	for _, n := range nodes {
		out, err := m.Netns.Command(ctx, "ip", "addr", "add", n.ip+"/32", "dev", "lo").CombinedOutput()
		require.NoError(t, err, string(out))
		t.Cleanup(func() { _ = m.Netns.Command(context.Background(), "ip", "addr", "del", n.ip+"/32", "dev", "lo").Run() })

		cmd := m.Netns.Command(context.Background(), os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envServe+"="+n.ip+":10250")
		svc, err := harness.Start(ctx, "svc-"+n.name, m.Dir, cmd)
		require.NoError(t, err)
		t.Cleanup(svc.Stop)

		p, err := harness.StartAgent(ctx, e.hub, m, harness.AgentConfig{
			Binary: e.agentBin, Name: "agent-" + n.name, Cluster: "m1",
			Args: []string{"--node-name", n.name, "--node-addresses", n.ip},
		})
		require.NoError(t, err)
		t.Cleanup(p.Stop)
		agents[n.name] = p
	}
	require.NoError(t, harness.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		if got := e.nodeSessions(t); len(got) != 2 {
			return fmt.Errorf("node sessions: %v", got)
		}
		return nil
	}))

	for _, n := range nodes {
		var status, body string
		require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
			status, body = connectGet(t, e, n.ip+":10250")
			if !strings.HasPrefix(status, "200") {
				return fmt.Errorf("CONNECT %s: %s", n.ip, status)
			}
			return nil
		}))
		assert.Equal(t, n.ip+":10250", body, "CONNECT %s reached the wrong node", n.ip)
	}
	// The hub's own namespace has no path to these addresses.
	_, err := net.DialTimeout("tcp", "10.252.1.1:10250", 2*time.Second)
	require.Error(t, err)

	before := e.hubCounter(t, `backhaul_hub_errors_total{reason="not_allowed"}`)
	refusals := []struct{ target, status string }{
		{"10.252.1.1:22", "403 cluster m1: 10.252.1.1:22 is not in the agent's allowlist"},
		{"169.254.169.254:80", "403 169.254.169.254 is the AWS, GCP, Azure and OpenStack metadata service and is never routed"},
		{"[64:ff9b::100.100.100.200]:80", "403 64:ff9b::6464:64c8 is an IPv6 address carrying 100.100.100.200, the Alibaba Cloud metadata service"},
		{"0.0.0.0:9090", "403 0.0.0.0 is an IPv4 \"this network\" address (reaches the local host)"},
		{"127.0.0.1:9090", "403 127.0.0.1 is a loopback address and is never routed"},
		{"10.252.9.9:10250", "404 no route to 10.252.9.9:10250"},
	}
	for _, r := range refusals {
		status, _ := connectGet(t, e, r.target)
		assert.True(t, strings.HasPrefix(status, r.status), "CONNECT %s: got %q, want %q", r.target, status, r.status)
	}
	assert.Greater(t, e.hubCounter(t, `backhaul_hub_errors_total{reason="not_allowed"}`), before, "the agent's refusal is counted")

	// The route goes with its agent.
	agents["node-a"].Stop()
	require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		if status, _ := connectGet(t, e, "10.252.1.1:10250"); !strings.HasPrefix(status, "404") {
			return fmt.Errorf("still routed: %s", status)
		}
		return nil
	}))
	status, body := connectGet(t, e, "10.252.1.2:10250")
	assert.True(t, strings.HasPrefix(status, "200"), status)
	assert.Equal(t, "10.252.1.2:10250", body)
}

func (e *environment) nodeSessions(t *testing.T) []string {
	var out []string
	for _, r := range e.sessions(t) {
		if n, _ := r["node"].(string); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// hubCounter reads one sample from the hub's /metrics (0 when absent).
func (e *environment) hubCounter(t *testing.T, series string) float64 {
	t.Helper()
	return counterAt(t, e.hub.AdminURL, series)
}

// counterAt reads one sample from the /metrics of the hub whose admin
// listener is adminURL (0 when absent).
func counterAt(t *testing.T, adminURL, series string) float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var f float64
			_, _ = fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}
