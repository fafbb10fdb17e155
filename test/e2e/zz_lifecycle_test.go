package e2e

// Named zz_ so these run last: they stop and restart agents and the hub.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// Stopping an agent: the next call answers 503 naming the cluster within a
// second. Restarting it: calls succeed again within ten seconds.
func TestAgentStopAndReturn(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	c := e.client(t, "m2", "admin")
	_, err := c.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	require.NoError(t, err)

	e.agent("m2").Kill()
	killed := time.Now()
	t.Cleanup(func() {
		if !e.isConnected("m2") {
			_ = e.restartAgent(context.Background(), "m2")
		}
	})

	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = c.CoreV1().Namespaces().Get(callCtx, "default", metav1.GetOptions{})
	took := time.Since(killed)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cluster m2 is not connected")
	var status interface{ Status() metav1.Status }
	require.ErrorAs(t, err, &status)
	assert.EqualValues(t, http.StatusServiceUnavailable, status.Status().Code)
	assert.Less(t, took, time.Second, "503 took %s", took)
	t.Logf("503 after agent kill: %s", took)

	// m1 is untouched.
	_, err = e.client(t, "m1", "admin").CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	require.NoError(t, err)

	require.NoError(t, e.restartAgent(ctx, "m2"))
	restarted := time.Now()
	require.NoError(t, waitNoErr(10*time.Second, func() error {
		_, err := c.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err
	}))
	t.Logf("calls succeed %s after the agent restarted", time.Since(restarted))
}

// Restarting the hub: both agents come back on their own.
func TestHubRestart(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	e.hub.Stop()
	stopped := time.Now()
	require.NoError(t, e.hub.Start(ctx))
	for _, n := range []string{"m1", "m2"} {
		require.NoError(t, e.waitReachable(ctx, n, 30*time.Second), "agent %s did not reconnect", n)
	}
	t.Logf("both clusters reachable %s after the hub stopped", time.Since(stopped))
	require.True(t, e.isConnected("m1"))
	require.True(t, e.isConnected("m2"))
}

// A wrong agent token: the upgrade is refused with 401 and a reason, no
// session is registered, and the agent logs why and backs off.
func TestWrongAgentToken(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()

	// Straight at the endpoint: 401 with a reason.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}}
	_, resp, err := websocket.Dial(ctx, "wss://127.0.0.1:"+strconv.Itoa(e.hub.Port)+tunnel.Path, &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer wrong-token-wrong-token"}, tunnel.HeaderCluster: {"m1"}},
		Subprotocols: []string{tunnel.Subprotocol},
	})
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	before := e.sessionCount(t, "m1")
	p, err := harness.StartAgent(ctx, e.hub, e.members["m1"], harness.AgentConfig{
		Binary: e.agentBin, Name: "agent-m1-badtoken", Cluster: "m1", Token: "definitely-not-the-token-for-m1",
	})
	require.NoError(t, err)
	t.Cleanup(p.Stop)

	time.Sleep(4 * time.Second)
	logb, err := os.ReadFile(p.LogPath())
	require.NoError(t, err)
	log := string(logb)
	assert.Contains(t, log, "hub refused the tunnel")
	assert.Contains(t, log, "401")
	assert.Contains(t, log, `invalid token for cluster \"m1\"`)
	// Backed off: one attempt, then a wait of at least the permanent floor.
	attempts := strings.Count(log, "hub refused the tunnel")
	assert.LessOrEqual(t, attempts, 2, "agent retried %d times in 4s:\n%s", attempts, log)
	assert.Equal(t, before, e.sessionCount(t, "m1"), "a refused agent must not be registered")
	select {
	case <-p.Exited():
		t.Fatalf("agent exited instead of backing off: %s", p.Tail(10))
	default:
	}
}

// Hub metrics reflect sessions and errors.
func TestHubMetrics(t *testing.T) {
	e := requireEnv(t)
	resp, err := http.Get(e.hub.AdminURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	found := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, name := range []string{"backhaul_hub_sessions ", "backhaul_hub_streams_opened_total", "backhaul_hub_stream_bytes_total", "backhaul_hub_dial_duration_seconds_bucket", "backhaul_hub_errors_total"} {
			if strings.HasPrefix(sc.Text(), name) {
				found[name] = true
			}
		}
	}
	for _, name := range []string{"backhaul_hub_sessions ", "backhaul_hub_streams_opened_total", "backhaul_hub_stream_bytes_total", "backhaul_hub_dial_duration_seconds_bucket"} {
		assert.True(t, found[name], "metric %s missing", name)
	}
	r, err := http.Get(e.hub.AdminURL + "/readyz")
	require.NoError(t, err)
	r.Body.Close()
	assert.Equal(t, http.StatusOK, r.StatusCode)
}

func (e *environment) sessions(t *testing.T) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.hub.URL+"/status", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+callers["admin"].Token)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal(b, &rows), string(b))
	return rows
}

func (e *environment) sessionCount(t *testing.T, cluster string) int {
	n := 0
	for _, r := range e.sessions(t) {
		if r["cluster"] == cluster {
			n++
		}
	}
	return n
}

func (e *environment) isConnected(cluster string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.kubectlErr(ctx, "--context", cluster, "get", "--raw", "/readyz")
	return err == nil
}
