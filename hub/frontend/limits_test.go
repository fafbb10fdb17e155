package frontend

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/testutil"
)

// step is one move in a limiter scenario: acquire a slot for caller to
// cluster (want is the refusal reason, "" to be admitted), or release the
// slot taken at step release-1.
type step struct {
	caller, cluster string
	want            string
	release         int
}

func TestLimitsAcquire(t *testing.T) {
	tests := []struct {
		name               string
		perCaller, cluster int
		memoryOver         bool
		steps              []step
	}{
		{name: "caller at its limit", perCaller: 2, steps: []step{
			{caller: "alice", cluster: "a"}, {caller: "alice", cluster: "b"},
			{caller: "alice", cluster: "c", want: ReasonCallerStreams},
			{caller: "bob", cluster: "a"}, // another caller is not affected
		}},
		{name: "a released slot is free again", perCaller: 1, steps: []step{
			{caller: "alice", cluster: "a"},
			{caller: "alice", cluster: "a", want: ReasonCallerStreams},
			{release: 1},
			{release: 1}, // twice is once
			{caller: "alice", cluster: "a"},
			{caller: "alice", cluster: "a", want: ReasonCallerStreams},
		}},
		{name: "cluster at its limit, every caller together", cluster: 2, steps: []step{
			{caller: "alice", cluster: "a"}, {caller: "bob", cluster: "a"},
			{caller: "carol", cluster: "a", want: ReasonClusterStreams},
			{caller: "carol", cluster: "b"},
		}},
		{name: "a refused stream takes no slot", perCaller: 2, cluster: 2, steps: []step{
			{caller: "alice", cluster: "a"}, {caller: "bob", cluster: "a"},
			{caller: "alice", cluster: "a", want: ReasonClusterStreams},
			{caller: "alice", cluster: "b"},
			{caller: "alice", cluster: "b", want: ReasonCallerStreams},
		}},
		{name: "zero is no limit", steps: []step{
			{caller: "alice", cluster: "a"}, {caller: "alice", cluster: "a"}, {caller: "alice", cluster: "a"},
		}},
		{name: "over the memory budget nothing new is admitted", memoryOver: true, steps: []step{
			{caller: "alice", cluster: "a", want: ReasonMemory},
			{caller: "bob", cluster: "b", want: ReasonMemory},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := DefaultLimitsConfig()
			cfg.PerCaller, cfg.PerCluster = tc.perCaller, tc.cluster
			cfg.Metrics, cfg.Log = NewMetrics(reg, session.NewMetrics(reg)), testutil.Logger(t)
			if tc.memoryOver {
				cfg.Memory = fixedBudget(t, 900)
			}
			l, err := NewLimits(cfg)
			require.NoError(t, err)
			var releases []func()
			held := 0
			for i, s := range tc.steps {
				if s.release > 0 {
					releases[s.release-1]()
					continue
				}
				release, ref := l.Acquire(frontEndGateway, s.caller, s.cluster)
				releases = append(releases, release)
				if s.want == "" {
					require.Nil(t, ref, "step %d", i)
					continue
				}
				require.NotNil(t, ref, "step %d", i)
				assert.Equal(t, s.want, ref.Reason, "step %d", i)
				assert.Equal(t, DefaultLimitRetryAfter, ref.RetryAfter)
				if s.want == ReasonMemory {
					assert.Equal(t, http.StatusServiceUnavailable, ref.Code)
				} else {
					assert.Equal(t, http.StatusTooManyRequests, ref.Code)
				}
			}
			for _, r := range releases {
				r()
			}
			held, _ = l.Held("alice", "a")
			assert.Zero(t, held, "every slot given back")
			assert.Empty(t, l.callers, "no caller left behind")
			assert.Empty(t, l.clusters, "no cluster left behind")
			assert.Zero(t, gauge(t, reg, "backhaul_hub_caller_streams", map[string]string{"front_end": frontEndGateway}))
		})
	}
}

func TestLimitsConfigValidate(t *testing.T) {
	ok := DefaultLimitsConfig()
	ok.Metrics, ok.Log = &Metrics{}, testutil.Logger(t)
	tests := []struct {
		name   string
		mutate func(*LimitsConfig)
		ok     bool
	}{
		{name: "defaults", mutate: func(*LimitsConfig) {}, ok: true},
		{name: "unlimited", mutate: func(c *LimitsConfig) { c.PerCaller, c.PerCluster = 0, 0 }, ok: true},
		{name: "negative caller limit", mutate: func(c *LimitsConfig) { c.PerCaller = -1 }},
		{name: "negative cluster limit", mutate: func(c *LimitsConfig) { c.PerCluster = -1 }},
		{name: "retry below a second", mutate: func(c *LimitsConfig) { c.RetryAfter = 0 }},
		{name: "no metrics", mutate: func(c *LimitsConfig) { c.Metrics = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.Validate(); tc.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

// fixedBudget is a 1000-byte limit refused above 800 whose usage is inUse.
func fixedBudget(t *testing.T, inUse uint64) *MemoryBudget {
	b, err := NewMemoryBudget(1000, 0.8, MemorySourceFlag)
	require.NoError(t, err)
	b.inUse = func() uint64 { return inUse }
	return b
}

func TestMemoryBudget(t *testing.T) {
	tests := []struct {
		name  string
		inUse uint64
		over  bool
	}{
		{name: "well under", inUse: 100},
		{name: "at the budget", inUse: 800},
		{name: "just over", inUse: 801, over: true},
		{name: "over the limit itself", inUse: 2000, over: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inUse, over := fixedBudget(t, tc.inUse).Over()
			assert.Equal(t, tc.inUse, inUse)
			assert.Equal(t, tc.over, over)
		})
	}
	_, err := NewMemoryBudget(1000, 0, MemorySourceFlag)
	assert.Error(t, err, "a zero fraction would refuse everything")
	_, err = NewMemoryBudget(0, 0.8, MemorySourceFlag)
	assert.Error(t, err, "no limit, no budget")
	// The runtime's reading is real memory, never zero in a running test.
	b, err := NewMemoryBudget(1<<62, 1, MemorySourceFlag)
	require.NoError(t, err)
	inUse, over := b.Over()
	assert.Positive(t, inUse)
	assert.False(t, over)
}

func TestParseMemoryLimit(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "1Gi", want: 1 << 30},
		{in: "800Mi", want: 800 << 20},
		{in: "1G", want: 1e9},
		{in: "123456", want: 123456},
		{in: "-1Gi", bad: true},
		{in: "lots", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMemoryLimit(tc.in)
			if tc.bad {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// admitted serves a gateway request as a response that never ends (a
// LIST or a log its caller never reads): headers, then nothing until the
// caller goes.
func admitted(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"kind":"ConfigMapList","items":[`)
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// limitedFrontEnds is newFrontEnds with limits: cluster alpha's agent
// serves admitted for the gateway and echoes CONNECT streams; alice and
// bob are callers.
func limitedFrontEnds(t *testing.T, cfg LimitsConfig) (*frontEnds, *Limits) {
	log := testutil.Logger(t)
	reg := prometheus.NewRegistry()
	tm := session.NewMetrics(reg)
	m := NewMetrics(reg, tm)
	cfg.Metrics, cfg.Log = m, log
	limits, err := NewLimits(cfg)
	require.NoError(t, err)
	sessions := session.NewRegistry(log, tm)
	dialer := session.NewDialer(sessions, nil, tm, hubtest.WaitBound)
	admission := auth.NewAdmission(auth.AllowAuthenticated{}, clusterSet{"alpha": true, "beta": true}, dialer)
	authn := auth.NewStaticTokens(map[string]*auth.User{"alice-token": alice, "bob-token": {Name: "bob"}})
	g, err := NewGateway(GatewayConfig{Authn: authn, Admission: admission, Dialer: dialer, Limits: limits, Metrics: m, Log: log})
	require.NoError(t, err)
	c, err := NewConnect(ConnectConfig{Authn: authn, Admission: admission, Dialer: dialer, Suffix: DefaultClusterSuffix,
		Limits: limits, Metrics: m, Log: log, InsecureCredentials: true})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/clusters/{name}/{path...}", g)
	f := &frontEnds{gateway: g, connect: c, mux: mux, sessions: sessions, metrics: reg}
	f.agent(t, "alpha", hubtest.HTTPAgent(t, http.HandlerFunc(admitted)), session.Agent{})
	f.agent(t, "beta", echoAgent, session.Agent{})
	return f, limits
}

// get sends a gateway GET as token and returns the response, its body
// unread (an admitted one stays open until closed).
func get(t *testing.T, srv *httptest.Server, token string) *http.Response {
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/clusters/alpha/api/v1/configmaps", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// requireRefused checks a gateway refusal: code, a Status whose reason
// client-go recognizes, Retry-After, and the count by reason.
func requireRefused(t *testing.T, f *frontEnds, resp *http.Response, code int, reason metav1.StatusReason, metric string, count float64) {
	t.Helper()
	require.Equal(t, code, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	st := hubtest.DecodeStatus(t, resp.Header.Get("Content-Type"), body)
	assert.Equal(t, reason, st.Reason)
	assert.EqualValues(t, code, st.Code)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"))
	assert.Equal(t, count, f.errors(t, metric))
}

// TestOneCallerCannotHoldEveryStream plays a caller who opens long
// requests and never reads them: beyond its limit it is told 429 with
// Retry-After, while another caller is still served; beyond the cluster's
// limit everyone is; a stream it lets go of is free again.
func TestOneCallerCannotHoldEveryStream(t *testing.T) {
	cfg := DefaultLimitsConfig()
	cfg.PerCaller, cfg.PerCluster = 2, 3
	f, limits := limitedFrontEnds(t, cfg)
	srv := httptest.NewServer(f.mux)
	t.Cleanup(srv.Close)

	first := get(t, srv, "alice-token")
	require.Equal(t, http.StatusOK, first.StatusCode)
	require.Equal(t, http.StatusOK, get(t, srv, "alice-token").StatusCode)
	requireRefused(t, f, get(t, srv, "alice-token"), http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, ReasonCallerStreams, 1)

	require.Equal(t, http.StatusOK, get(t, srv, "bob-token").StatusCode, "another caller is still served")
	requireRefused(t, f, get(t, srv, "bob-token"), http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, ReasonClusterStreams, 1)
	assert.Equal(t, 3.0, gauge(t, f.metrics, "backhaul_hub_caller_streams", map[string]string{"front_end": frontEndGateway}))

	// Letting go of a stream gives its slot back once the gateway is done
	// with it (the request's context ends with the connection).
	require.NoError(t, first.Body.Close())
	require.Eventually(t, func() bool { n, _ := limits.Held("alice", "alpha"); return n == 1 }, hubtest.WaitBound, 10*time.Millisecond)
	require.Equal(t, http.StatusOK, get(t, srv, "alice-token").StatusCode)
}

// TestConnectCallerBeyondItsLimitGets429: the same limit on CONNECT, as a
// proxy answer with Retry-After; a tunnel closed frees its slot.
func TestConnectCallerBeyondItsLimitGets429(t *testing.T) {
	cfg := DefaultLimitsConfig()
	cfg.PerCaller = 1
	f, limits := limitedFrontEnds(t, cfg)

	status, br, held := rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer alice-token")
	require.Equal(t, "200 Connection established", status)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "apiserver-tcp \n", line, "the tunnel works")

	status, _, _ = rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer alice-token")
	assert.True(t, strings.HasPrefix(status, "429 too many concurrent requests"), status)
	assert.Equal(t, 1.0, f.errors(t, ReasonCallerStreams))
	status, _, _ = rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer bob-token")
	assert.Equal(t, "200 Connection established", status, "another caller is still served")

	require.NoError(t, held.Close())
	require.Eventually(t, func() bool { n, _ := limits.Held("alice", "beta"); return n == 0 }, hubtest.WaitBound, 10*time.Millisecond)
	status, _, _ = rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer alice-token")
	assert.Equal(t, "200 Connection established", status)
}

// TestMemoryBudgetRefusesNewStreamsOnly: above the budget a new stream is
// refused with 503 and Retry-After, on both front ends, and a stream
// already open goes on; back under it, new streams are admitted again.
func TestMemoryBudgetRefusesNewStreamsOnly(t *testing.T) {
	var inUse atomic.Uint64
	budget := fixedBudget(t, 0)
	budget.inUse = inUse.Load
	cfg := DefaultLimitsConfig()
	cfg.Memory = budget
	f, _ := limitedFrontEnds(t, cfg)
	srv := httptest.NewServer(f.mux)
	t.Cleanup(srv.Close)
	assert.Equal(t, 1000.0, gauge(t, f.metrics, "backhaul_hub_memory_limit_bytes", nil))
	assert.Equal(t, 800.0, gauge(t, f.metrics, "backhaul_hub_memory_budget_bytes", nil))

	open := get(t, srv, "alice-token")
	require.Equal(t, http.StatusOK, open.StatusCode)
	status, br, tunnelled := rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer alice-token")
	require.Equal(t, "200 Connection established", status)
	_, err := br.ReadString('\n')
	require.NoError(t, err)

	inUse.Store(900)
	requireRefused(t, f, get(t, srv, "bob-token"), http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, ReasonMemory, 1)
	status, _, _ = rawConnect(t, f.connect, "beta.cluster.backhaul:443", "Bearer bob-token")
	assert.True(t, strings.HasPrefix(status, "503 the hub is short of memory"), status)

	// What was open still flows.
	_, err = io.WriteString(tunnelled, "still here\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "still here\n", line)
	buf := make([]byte, 8)
	n, err := open.Body.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, `{"kind":`, string(buf[:n]))

	inUse.Store(100)
	require.Equal(t, http.StatusOK, get(t, srv, "bob-token").StatusCode)
}

func gauge(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
