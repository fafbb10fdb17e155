package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/test/harness"
)

// Issue 14, item 4: one caller must not be able to take the hub down by
// opening streams it never reads. These tests run a hub of their own, so
// its memory is theirs alone, with an agent of m1 dialling it.

const (
	quotaNS = "e2e-quota"
	// quotaObjects × quotaObjectSize is the list every unread request
	// asks for: 8 MiB, more than the kernel buffers between hub and
	// caller and the hub's stream window together, so each unread stream
	// holds its whole window in the hub.
	quotaObjects    = 80
	quotaObjectSize = 100 << 10
	// quotaRSSBound is issue 14's bound on the hub's resident memory.
	quotaRSSBound = 300 << 20
)

var quotaCallers = map[string]harness.Caller{
	"flooder":   {Token: "e2e-quota-flooder-token-0123456", User: "flooder", Groups: []string{"fleet-admins"}},
	"bystander": {Token: "e2e-quota-bystander-token-012345", User: "bystander", Groups: []string{"fleet-admins"}},
}

// quotaHub starts a hub with args and an agent of m1 dialling it, and
// waits until m1 is reachable through it.
func quotaHub(t *testing.T, ctx context.Context, e *environment, name string, args ...string) *harness.Hub {
	t.Helper()
	hubBin, _, err := harness.BackhaulBinaries(ctx)
	require.NoError(t, err)
	m := e.members["m1"]
	h, err := harness.StartHub(ctx, harness.HubConfig{
		Binary: hubBin, Dir: filepath.Join(e.dir, name), HostIPs: []string{m.Netns.HostIP.String()},
		Clusters: []string{"m1"}, Callers: quotaCallers, Args: args,
	})
	if h != nil {
		t.Cleanup(h.Stop)
	}
	require.NoError(t, err)
	a, err := harness.StartAgent(ctx, h, m, harness.AgentConfig{Binary: e.agentBin, Name: "agent-m1-" + name, Cluster: "m1"})
	require.NoError(t, err)
	t.Cleanup(a.Stop)
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		c, err := dialQuota(ctx, h, "bystander", "/readyz")
		if err != nil {
			return err
		}
		defer c.Close()
		if c.resp.StatusCode != http.StatusOK {
			return fmt.Errorf("m1 through the quota hub: %s", c.resp.Status)
		}
		return nil
	}))
	return h
}

// quotaObjectsOnce fills quotaNS in m1 with the big list (through the
// suite's hub, as admin); the objects stay for later runs.
func quotaObjectsOnce(t *testing.T, ctx context.Context, e *environment) {
	t.Helper()
	cs := e.client(t, "m1", "admin")
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: quotaNS}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	payload := strings.Repeat("x", quotaObjectSize)
	for i := range quotaObjects {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%03d", i)}, Data: map[string]string{"payload": payload}}
		if _, err := cs.CoreV1().ConfigMaps(quotaNS).Create(ctx, cm, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
}

// quotaConn is one request through the gateway whose response head was
// read and whose body never is.
type quotaConn struct {
	*tls.Conn
	resp *http.Response
}

// dialQuota sends GET /clusters/m1<path> as caller on a connection of its
// own and reads the response head only.
func dialQuota(ctx context.Context, h *harness.Hub, caller, path string) (*quotaConn, error) {
	d := tls.Dialer{Config: h.TLSConfig()}
	nc, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(h.URL, "https://"))
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	req := fmt.Sprintf("GET /clusters/m1%s HTTP/1.1\r\nHost: hub\r\nAccept: application/json\r\nAuthorization: Bearer %s\r\n\r\n", path, quotaCallers[caller].Token)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		_ = c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4<<10), nil)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return &quotaConn{Conn: c, resp: resp}, nil
}

// processMemory reads VmRSS and VmHWM (the peak) of pid, in bytes.
func processMemory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		require.NoError(t, err)
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak
}

// TestUnreadStreamsCannotExhaustTheHub plays a caller who opens 300
// requests for an 8 MiB list and never reads them (with 16 MiB stream
// windows and no limit, 64 such streams filled a 1 GiB hub). With the
// default bounds the hub carries the first 100, answers the rest 429
// with Retry-After and a Status, stays under 300 MiB of resident memory,
// and keeps serving another caller's kubectl meanwhile.
func TestUnreadStreamsCannotExhaustTheHub(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	quotaObjectsOnce(t, ctx, e)
	h := quotaHub(t, ctx, e, "quota-hub") // every bound at its default
	pid := h.Process().PID()
	_, baseline := processMemory(t, pid)

	const attempts, limit = 300, 100 // limit: --max-streams-per-caller's default
	var held []*quotaConn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	codes := map[int]int{}
	var tooMany *http.Response
	var tooManyBody []byte
	for range attempts {
		c, err := dialQuota(ctx, h, "flooder", "/api/v1/namespaces/"+quotaNS+"/configmaps")
		require.NoError(t, err)
		codes[c.resp.StatusCode]++
		if c.resp.StatusCode == http.StatusOK {
			held = append(held, c) // and never read
			continue
		}
		if tooMany == nil && c.resp.StatusCode == http.StatusTooManyRequests {
			tooMany = c.resp
			tooManyBody, err = io.ReadAll(c.resp.Body)
			require.NoError(t, err)
		}
		_ = c.Close()
	}
	t.Logf("flooder's %d unread LISTs: %v (HTTP code: count)", attempts, codes)
	require.Equal(t, map[int]int{http.StatusOK: limit, http.StatusTooManyRequests: attempts - limit}, codes)
	require.NotNil(t, tooMany)
	assert.Equal(t, "2", tooMany.Header.Get("Retry-After"))
	var st metav1.Status
	require.NoError(t, json.Unmarshal(tooManyBody, &st), "%s", tooManyBody)
	assert.Equal(t, metav1.StatusReasonTooManyRequests, st.Reason)
	assert.EqualValues(t, http.StatusTooManyRequests, st.Code)
	assert.Contains(t, st.Message, "flooder")

	// Meanwhile another caller is served, a list of the same 8 MiB too.
	kubeconfig := filepath.Join(e.dir, "quota-hub", "bystander.kubeconfig")
	require.NoError(t, h.WriteKubeconfig(kubeconfig, []string{"m1"}, quotaCallers["bystander"].Token))
	for _, args := range [][]string{{"get", "namespace", quotaNS, "-o", "name"}, {"get", "configmaps", "-n", quotaNS, "-o", "name"}} {
		cmd := execCommand(ctx, e.bins.Kubectl, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=60s"}, args...)...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "bystander: kubectl %s: %s", strings.Join(args, " "), out)
		if args[1] == "configmaps" {
			assert.Len(t, strings.Fields(string(out)), quotaObjects)
		}
	}

	// The unread streams have filled what they can: the agent has sent
	// each its window's worth and waits. Sample the hub's memory a while
	// (the bound is on the peak, VmHWM, so no sample can miss it).
	var rss int64
	for range 10 {
		rss, _ = processMemory(t, pid)
		time.Sleep(500 * time.Millisecond)
	}
	_, peak := processMemory(t, pid)
	rx := hubMetric(t, h, `backhaul_hub_stream_bytes_total{direction="rx"}`)
	t.Logf("hub RSS %d MiB with %d unread streams held (peak %d MiB, %d MiB before; %.0f MiB received from the agent)",
		rss>>20, len(held), peak>>20, baseline>>20, rx/(1<<20))
	assert.Less(t, peak, int64(quotaRSSBound), "the hub's peak resident memory")
	assert.Equal(t, float64(limit), hubMetric(t, h, `backhaul_hub_caller_streams{front_end="gateway"}`))
	assert.Equal(t, float64(attempts-limit), hubMetric(t, h, `backhaul_hub_errors_total{reason="caller_streams"}`))

	// Letting go of the streams gives the caller its share back.
	for _, c := range held {
		_ = c.Close()
	}
	held = nil
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		if n := hubMetric(t, h, `backhaul_hub_caller_streams{front_end="gateway"}`); n != 0 {
			return fmt.Errorf("%v streams still counted", n)
		}
		return nil
	}))
	c, err := dialQuota(ctx, h, "flooder", "/api/v1/namespaces/"+quotaNS)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, http.StatusOK, c.resp.StatusCode)
}

// TestMemoryBudgetRefusesNewStreams plays the same caller against a hub
// with no per-caller limit and a small memory budget: once the memory in
// use passes the budget, new streams get 503 with Retry-After, the
// streams already open still flow, and the hub's memory stays bounded.
func TestMemoryBudgetRefusesNewStreams(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	quotaObjectsOnce(t, ctx, e)
	h := quotaHub(t, ctx, e, "budget-hub", "--max-streams-per-caller=0", "--memory-limit=256Mi", "--memory-budget=0.5")

	var held []*quotaConn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var refused *http.Response
	for range 300 {
		c, err := dialQuota(ctx, h, "flooder", "/api/v1/namespaces/"+quotaNS+"/configmaps")
		require.NoError(t, err)
		if c.resp.StatusCode != http.StatusOK {
			refused = c.resp
			_ = c.Close()
			break
		}
		held = append(held, c) // and never read
	}
	require.NotNil(t, refused, "300 unread streams and never over a 128 MiB budget")
	t.Logf("refused after %d unread streams: %s", len(held), refused.Status)
	assert.Equal(t, http.StatusServiceUnavailable, refused.StatusCode)
	assert.Equal(t, "2", refused.Header.Get("Retry-After"))
	assert.Positive(t, hubMetric(t, h, `backhaul_hub_errors_total{reason="memory"}`))
	assert.Equal(t, float64(256<<20), hubMetric(t, h, "backhaul_hub_memory_limit_bytes"))
	_, peak := processMemory(t, h.Process().PID())
	t.Logf("hub peak RSS %d MiB", peak>>20)
	assert.Less(t, peak, int64(quotaRSSBound))

	// An open stream goes on: read the first list to its end.
	first := held[0]
	_ = first.SetReadDeadline(time.Now().Add(time.Minute))
	var list corev1.ConfigMapList
	require.NoError(t, json.NewDecoder(first.resp.Body).Decode(&list))
	assert.Len(t, list.Items, quotaObjects)
}

// hubMetric reads one sample, series with its labels as /metrics prints
// them, from h's admin listener (0 when absent).
func hubMetric(t *testing.T, h *harness.Hub, series string) float64 {
	t.Helper()
	resp, err := http.Get(h.AdminURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, "%s", sc.Text())
			return f
		}
	}
	require.NoError(t, sc.Err())
	return 0
}
