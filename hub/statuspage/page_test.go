package statuspage_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/hub/statuspage/statuspagetest"
	"backhaul.io/backhaul/pkg/testutil"
)

const fleetSize = 40

// alice may reach one connected and one disconnected cluster.
var aliceClusters = []string{statuspagetest.Name(1), statuspagetest.Name(13)}

type env struct {
	url   string
	fleet *statuspagetest.Fleet
	authz *statuspagetest.Authz
	clock *clocktesting.FakeClock
	cfg   statuspage.Config
	reg   *prometheus.Registry
}

// newEnv serves a page over a fake fleet of fleetSize clusters; admin
// may reach all, alice aliceClusters, bob none. Time stands still
// unless the test steps e.clock.
func newEnv(t *testing.T, mod ...func(*statuspage.Config)) *env {
	e := &env{fleet: statuspagetest.NewFleet(fleetSize), authz: statuspagetest.NewAuthz(),
		clock: clocktesting.NewFakeClock(time.Now()), reg: prometheus.NewRegistry()}
	e.authz.GrantAll("admin")
	e.authz.Grant("alice", aliceClusters...)
	cfg := statuspagetest.Config(t, e.fleet, e.authz, map[string]*auth.User{
		"admin-token": {Name: "admin"}, "alice-token": {Name: "alice", Groups: []string{"ops"}}, "bob-token": {Name: "bob"},
	})
	cfg.Clock, cfg.Metrics = e.clock, statuspage.NewMetrics(e.reg)
	for _, m := range mod {
		m(&cfg)
	}
	e.cfg = cfg
	srv := httptest.NewServer(statuspagetest.Serve(t, cfg))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// plain never asks for gzip, so bodies are what the hub wrote.
var plain = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}

type answer struct {
	code int
	h    http.Header
	body []byte
}

func (e *env) do(t *testing.T, method, path, token string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := plain.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, resp.Header, b}
}

func (e *env) get(t *testing.T, path, token string, hdr ...string) answer {
	t.Helper()
	return e.do(t, http.MethodGet, path, token, hdr...)
}

type fleetAnswer struct {
	Replica  string               `json:"replica"`
	User     string               `json:"user"`
	Poll     float64              `json:"pollSeconds"`
	Clusters []statuspage.Cluster `json:"clusters"`
}

func (e *env) clusters(t *testing.T, token string) fleetAnswer {
	t.Helper()
	a := e.get(t, statuspage.PathClusters, token)
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var f fleetAnswer
	require.NoError(t, json.Unmarshal(a.body, &f), "%s", a.body)
	return f
}

func names(cs []statuspage.Cluster) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestPageNeedsCredentials(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name     string
		path     string
		token    string
		accept   string
		wantCode int
		wantHTML bool // the page, else a Status
	}{
		{"fleet without credentials", statuspage.PathClusters, "", "", http.StatusUnauthorized, false},
		{"fleet with an unknown token", statuspage.PathClusters, "nope", "", http.StatusUnauthorized, false},
		{"history without credentials", statuspage.PathHistory + "?cluster=" + statuspagetest.Name(1), "", "", http.StatusUnauthorized, false},
		{"page for a client without credentials", statuspage.PathPage, "", "", http.StatusUnauthorized, false},
		{"page for a browser without credentials: the page asks for a token", statuspage.PathPage, "", "text/html,application/xhtml+xml", http.StatusUnauthorized, true},
		{"page for JSON without credentials", statuspage.PathPage, "", "application/json", http.StatusUnauthorized, false},
		{"page with credentials", statuspage.PathPage, "alice-token", "text/html", http.StatusOK, true},
		{"the script is public code", statuspage.PathAssets + "app.js", "", "", http.StatusOK, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.get(t, tc.path, tc.token, "Accept", tc.accept)
			assert.Equal(t, tc.wantCode, a.code)
			switch {
			case tc.wantHTML:
				assert.Equal(t, "text/html; charset=utf-8", a.h.Get("Content-Type"))
				assert.Contains(t, string(a.body), `<script src="/status/assets/app.js" defer></script>`)
				assert.Contains(t, string(a.body), `id="login-form"`)
			case tc.wantCode != http.StatusOK:
				st := hubtest.DecodeStatus(t, a.h.Get("Content-Type"), a.body)
				assert.Equal(t, "Unauthorized", st.Message)
			}
		})
	}
}

func TestFleetIsWhatTheCallerMayReach(t *testing.T) {
	e := newEnv(t)
	admin := e.clusters(t, "admin-token")
	assert.Equal(t, "admin", admin.User)
	assert.Equal(t, "hub-0", admin.Replica)
	assert.Equal(t, e.cfg.Poll.Seconds(), admin.Poll)
	require.Len(t, admin.Clusters, fleetSize, "every registered cluster, connected or not")
	assert.False(t, admin.Clusters[0].Connected, "site-00000 is disconnected and listed")
	assert.True(t, admin.Clusters[1].Connected)

	alice := e.clusters(t, "alice-token")
	assert.Equal(t, aliceClusters, names(alice.Clusters))
	assert.False(t, alice.Clusters[1].Connected)

	bob := e.get(t, statuspage.PathClusters, "bob-token")
	require.Equal(t, http.StatusOK, bob.code)
	assert.Contains(t, string(bob.body), `"clusters":[]`, "an empty fleet is an empty list")

	// Histories only of what the caller may reach, and only of known
	// clusters; a disconnected one has none.
	q := fmt.Sprintf("?cluster=%s&cluster=%s&cluster=%s&cluster=unknown", aliceClusters[0], aliceClusters[1], statuspagetest.Name(2))
	a := e.get(t, statuspage.PathHistory+q, "alice-token")
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var hist map[string][][2]int64
	require.NoError(t, json.Unmarshal(a.body, &hist))
	assert.Len(t, hist, 2)
	assert.Len(t, hist[aliceClusters[0]], 60, "an hour, one sample a minute")
	assert.Empty(t, hist[aliceClusters[1]])
	first := hist[aliceClusters[0]][0]
	assert.Positive(t, first[1], "round trip in microseconds")
}

func TestHistoryRequestsAreBounded(t *testing.T) {
	e := newEnv(t, func(c *statuspage.Config) { c.MaxHistory = 2 })
	q := "?cluster=a&cluster=b&cluster=c"
	a := e.get(t, statuspage.PathHistory+q, "admin-token")
	assert.Equal(t, http.StatusBadRequest, a.code)
	assert.Equal(t, "at most 2 clusters per history request", hubtest.DecodeStatus(t, a.h.Get("Content-Type"), a.body).Message)
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{statuspage.PathPage, statuspage.PathAssets + "app.js", statuspage.PathAssets + "app.css", statuspage.PathClusters, statuspage.PathPage + "?x"} {
		t.Run(path, func(t *testing.T) {
			a := e.get(t, path, "admin-token", "Accept", "text/html")
			require.Equal(t, http.StatusOK, a.code)
			csp := a.h.Get("Content-Security-Policy")
			assert.Contains(t, csp, "default-src 'none'")
			assert.Contains(t, csp, "script-src 'self'")
			assert.Contains(t, csp, "frame-ancestors 'none'")
			assert.NotContains(t, csp, "unsafe")
			assert.Equal(t, "DENY", a.h.Get("X-Frame-Options"))
			assert.Equal(t, "nosniff", a.h.Get("X-Content-Type-Options"))
			assert.Equal(t, "no-referrer", a.h.Get("Referrer-Policy"))
		})
	}
	// Nothing in the page runs inline: its only script is the file.
	page := string(e.get(t, statuspage.PathPage, "admin-token", "Accept", "text/html").body)
	assert.Equal(t, 1, strings.Count(page, "<script"))
	assert.NotRegexp(t, `\son[a-z]+=`, page, "no inline event handlers")
	assert.NotContains(t, page, "style=")
}

func TestWrongMethods(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{statuspage.PathPage, statuspage.PathClusters, statuspage.PathHistory, statuspage.PathAssets + "app.js"} {
		a := e.do(t, http.MethodPost, path, "admin-token")
		require.Equal(t, http.StatusMethodNotAllowed, a.code, path)
		assert.Equal(t, "GET", a.h.Get("Allow"), path)
		st := hubtest.DecodeStatus(t, a.h.Get("Content-Type"), a.body)
		assert.Equal(t, "method POST is not allowed on "+path+"; use GET", st.Message)
	}
}

func TestAssets(t *testing.T) {
	e := newEnv(t)
	cases := []struct{ file, ctype string }{
		{"app.js", "text/javascript; charset=utf-8"},
		{"app.css", "text/css; charset=utf-8"},
		{"icon.svg", "image/svg+xml"},
	}
	for _, tc := range cases {
		a := e.get(t, statuspage.PathAssets+tc.file, "")
		require.Equal(t, http.StatusOK, a.code, tc.file)
		assert.Equal(t, tc.ctype, a.h.Get("Content-Type"), tc.file)
		assert.Equal(t, "no-cache", a.h.Get("Cache-Control"))
		again := e.get(t, statuspage.PathAssets+tc.file, "", "If-None-Match", a.h.Get("ETag"))
		assert.Equal(t, http.StatusNotModified, again.code, "revalidated, not sent again")
	}
	for _, missing := range []string{"index.html", "nope.js"} {
		a := e.get(t, statuspage.PathAssets+missing, "")
		assert.Equal(t, http.StatusNotFound, a.code, missing)
	}
}

func TestUnchangedFleetIsNotModified(t *testing.T) {
	e := newEnv(t)
	first := e.get(t, statuspage.PathClusters, "admin-token")
	require.Equal(t, http.StatusOK, first.code)
	etag := first.h.Get("ETag")
	require.NotEmpty(t, etag)
	assert.Equal(t, "no-store", first.h.Get("Cache-Control"))
	assert.Equal(t, http.StatusNotModified, e.get(t, statuspage.PathClusters, "admin-token", "If-None-Match", etag).code)
	// Another caller's answer differs, so does its tag.
	assert.NotEqual(t, etag, e.get(t, statuspage.PathClusters, "alice-token").h.Get("ETag"))

	require.True(t, e.fleet.Update(statuspagetest.Name(1), func(c *statuspage.Cluster) { c.Connected, c.Ready = false, false }))
	e.clock.Step(e.cfg.Refresh)
	var got statuspage.Cluster
	require.Eventually(t, func() bool {
		a := e.get(t, statuspage.PathClusters, "admin-token", "If-None-Match", etag)
		if a.code != http.StatusOK {
			return false
		}
		var f fleetAnswer
		require.NoError(t, json.Unmarshal(a.body, &f))
		got = f.Clusters[1]
		return a.h.Get("ETag") != etag
	}, 5*time.Second, 5*time.Millisecond)
	assert.False(t, got.Connected, "the change is in the new answer")
}

func TestGzipIsTheSameAnswer(t *testing.T) {
	e := newEnv(t)
	raw := e.get(t, statuspage.PathClusters, "admin-token")
	zipped := e.get(t, statuspage.PathClusters, "admin-token", "Accept-Encoding", "gzip")
	require.Equal(t, "gzip", zipped.h.Get("Content-Encoding"))
	assert.Equal(t, "Accept-Encoding", zipped.h.Get("Vary"))
	zr, err := gzip.NewReader(bytes.NewReader(zipped.body))
	require.NoError(t, err)
	unzipped, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.Equal(t, raw.body, unzipped)
	assert.Less(t, len(zipped.body), len(raw.body))
}

func TestSnapshotsOnlyWhileSomeoneLooks(t *testing.T) {
	e := newEnv(t)
	assert.Zero(t, e.fleet.Reads.Load(), "nobody looked: the fleet was not read")
	for range 20 {
		e.clusters(t, "admin-token")
	}
	assert.EqualValues(t, 1, e.fleet.Reads.Load(), "one snapshot serves every request within Refresh")
	e.clock.Step(e.cfg.Refresh)
	e.clusters(t, "admin-token") // served the old snapshot; asks for a new one
	require.Eventually(t, func() bool { return e.fleet.Reads.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
	for range 5 {
		e.clusters(t, "alice-token")
	}
	assert.EqualValues(t, 2, e.fleet.Reads.Load())
	reviews := func(scope string) float64 {
		return hubtest.Counter(t, e.reg, "backhaul_hub_status_page_reviews_total", map[string]string{"scope": scope})
	}
	assert.Equal(t, 2.0, reviews("all"), "admin and alice, once each")
	assert.Equal(t, float64(fleetSize), reviews("cluster"), "alice, once per cluster")
	families, err := e.reg.Gather()
	require.NoError(t, err)
	var size float64
	for _, f := range families {
		if f.GetName() == "backhaul_hub_status_page_snapshot_clusters" {
			size = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	assert.Equal(t, float64(fleetSize), size)
}

func TestReachIsReviewedOncePerTTL(t *testing.T) {
	e := newEnv(t)
	before := e.authz.TotalCalls()
	for range 10 {
		e.clusters(t, "admin-token")
	}
	assert.Equal(t, 1, e.authz.TotalCalls()-before, "a caller who may reach every cluster: one review")

	before = e.authz.TotalCalls()
	for range 10 {
		e.clusters(t, "alice-token")
	}
	assert.Equal(t, 1+fleetSize, e.authz.TotalCalls()-before, "a caller limited to some: one for all, then one per cluster, once")

	// A new cluster costs one review, not the fleet's.
	e.fleet.Add(statuspage.Cluster{Name: "zz-new", Connected: true})
	e.authz.Grant("alice", "zz-new")
	e.clock.Step(e.cfg.Refresh)
	before = e.authz.TotalCalls()
	require.Eventually(t, func() bool {
		return len(e.clusters(t, "alice-token").Clusters) == len(aliceClusters)+1
	}, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, e.authz.TotalCalls()-before)

	// After the TTL, everything is asked again: a revocation shows.
	e.authz.Grant("alice") // (no change)
	e.clock.Step(e.cfg.AccessTTL)
	before = e.authz.TotalCalls()
	e.clusters(t, "alice-token")
	assert.Greater(t, e.authz.TotalCalls()-before, 1)
}

func TestReviewErrorsAreNotRemembered(t *testing.T) {
	e := newEnv(t)
	e.authz.Fail(fmt.Errorf("%w: host down", auth.ErrUnavailable))
	a := e.get(t, statuspage.PathClusters, "alice-token")
	require.Equal(t, http.StatusServiceUnavailable, a.code, "%s", a.body)
	assert.Equal(t, "1", a.h.Get("Retry-After"))
	hubtest.DecodeStatus(t, a.h.Get("Content-Type"), a.body)

	e.authz.Fail(nil)
	assert.Equal(t, aliceClusters, names(e.clusters(t, "alice-token").Clusters))
}

// GET /status with Accept: application/json lists this replica's sessions
// as before the page, filtered the same way.
func TestSessionsJSON(t *testing.T) {
	reg := session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry()))
	for _, c := range []string{aliceClusters[0], statuspagetest.Name(2)} {
		ts, _ := hubtest.PipeSessions(t)
		_, remove, err := reg.Add(c, ts, session.Agent{Version: "v9"})
		require.NoError(t, err)
		t.Cleanup(remove)
	}
	e := newEnv(t, func(c *statuspage.Config) { c.Sessions = reg })
	a := e.get(t, statuspage.PathPage, "alice-token", "Accept", "application/json")
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var rows []struct {
		Cluster      string `json:"cluster"`
		ID           uint64 `json:"id"`
		AgentVersion string `json:"agentVersion"`
		RTT          string `json:"rtt"`
		Age          string `json:"age"`
	}
	require.NoError(t, json.Unmarshal(a.body, &rows))
	require.Len(t, rows, 1)
	assert.Equal(t, aliceClusters[0], rows[0].Cluster)
	assert.Equal(t, "v9", rows[0].AgentVersion)
	assert.Equal(t, "-", rows[0].RTT, "not probed yet")
	assert.NotZero(t, rows[0].ID)

	assert.Equal(t, http.StatusUnauthorized, e.get(t, statuspage.PathPage, "", "Accept", "application/json").code)
	assert.Equal(t, "[]\n", string(e.get(t, statuspage.PathPage, "bob-token", "Accept", "application/json").body))
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*statuspage.Config)
	}{
		{"no source", func(c *statuspage.Config) { c.Source = nil }},
		{"no authorizer", func(c *statuspage.Config) { c.Authz = nil }},
		{"no refresh", func(c *statuspage.Config) { c.Refresh = 0 }},
		{"no workers", func(c *statuspage.Config) { c.AccessWorkers = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := statuspage.DefaultConfig()
			cfg.Authn, cfg.Authz, cfg.Source, cfg.Log = auth.Union{}, statuspagetest.NewAuthz(), statuspagetest.NewFleet(1), testutil.Logger(t)
			require.NoError(t, cfg.Validate())
			tc.mod(&cfg)
			assert.Error(t, cfg.Validate())
		})
	}
}
