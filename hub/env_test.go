package hub

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// fakeMember stands in for a member cluster's API server and records what
// reaches it.
type fakeMember struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	// next releases the second chunk of the streaming endpoint.
	next chan struct{}
	stop chan struct{}
}

const (
	alphaToken   = "alpha-token-0123456789"
	betaToken    = "beta-token-0123456789"
	agentSAToken = "agent-service-account-token"
	watchPath    = "/api/v1/namespaces/default/pods"
	chunk1       = `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a"}}}` + "\n"
	chunk2       = `{"type":"DELETED","object":{"kind":"Pod","metadata":{"name":"a"}}}` + "\n"
)

func newFakeMember(t *testing.T) *fakeMember {
	m := &fakeMember{next: make(chan struct{}), stop: make(chan struct{})}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(m.serve))
	m.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(func() {
		close(m.stop) // a streaming handler still waiting must not hold Close up
		m.srv.Close()
	})
	return m
}

func (m *fakeMember) serve(w http.ResponseWriter, r *http.Request) {
	// The hub's own background probes are not the requests under test.
	if r.Header.Get("Impersonate-User") != auth.HubUser {
		m.mu.Lock()
		m.reqs = append(m.reqs, r.Clone(context.Background()))
		m.mu.Unlock()
	}
	if r.URL.Path == watchPath && r.URL.Query().Get("watch") == "true" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, chunk1)
		w.(http.Flusher).Flush()
		select {
		case <-m.next:
		case <-r.Context().Done():
			return
		case <-m.stop:
			return
		}
		_, _ = io.WriteString(w, chunk2)
		w.(http.Flusher).Flush()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"kind":"NamespaceList","apiVersion":"v1","items":[]}`)
}

func (m *fakeMember) last(t *testing.T) *http.Request {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	require.NotEmpty(t, m.reqs, "nothing reached the member")
	return m.reqs[len(m.reqs)-1]
}

func (m *fakeMember) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.reqs)
}

func (m *fakeMember) restConfig() *rest.Config {
	pemBytes := hubtest.CertPEM(m.srv.Certificate().Raw)
	return &rest.Config{
		Host:            m.srv.URL,
		BearerToken:     agentSAToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: pemBytes},
	}
}

// hubEnv is a running hub with one agent connected for cluster alpha; beta
// is known but has no agent.
type hubEnv struct {
	ca     *hubtest.CA
	srv    *Server
	url    string
	member *fakeMember
	client *http.Client
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

func startHub(t *testing.T) *hubEnv {
	ca := hubtest.NewCA(t, "backhaul test CA")
	dir := t.TempDir()
	agents, err := auth.NewAgentTokens(writeFile(t, filepath.Join(dir, "agents.csv"),
		alphaToken+",alpha\n"+betaToken+",beta\n"), "")
	require.NoError(t, err)
	callers, err := auth.LoadStaticTokens(writeFile(t, filepath.Join(dir, "callers.csv"),
		`alice-token,alice,uid-alice,"dev,ops"`+"\n"+
			`root-token,root,uid-root,"dev,system:masters"`+"\n"))
	require.NoError(t, err)

	cfg := DefaultConfig()
	cfg.Replica = "hub-test"
	cfg.Listen, cfg.ConnectListen, cfg.ConnectTLS = "127.0.0.1:0", "127.0.0.1:0", true
	cfg.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCert(t)},
		ClientCAs:    ca.Pool,
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"}, // as servingTLS
	}
	cfg.AgentAuth, cfg.Clusters = agents, agents
	cfg.Authn = auth.Union{auth.NewClientCerts(ca.Cert), callers}
	cfg.Authz = auth.AllowAuthenticated{}
	cfg.DialTimeout, cfg.ShutdownGrace, cfg.ShutdownDelay = 5*time.Second, 5*time.Second, 0
	// The status page shows round trips the prober measured: probe often.
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.Log, cfg.Metrics = testutil.Logger(t), prometheus.NewRegistry()
	srv, err := New(cfg)
	require.NoError(t, err)

	env := &hubEnv{ca: ca, srv: srv, member: newFakeMember(t)}
	testutil.Background(t, "hub Run", hubtest.WaitBound, srv.Run)
	require.Eventually(t, func() bool { return srv.Addr() != nil }, hubtest.WaitBound, 5*time.Millisecond, "hub never listened")
	env.url = "https://" + srv.Addr().String()

	// Callers speak HTTP/2 to the hub, as client-go does.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}, Proxy: noProxy, ForceAttemptHTTP2: true}
	env.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return env
}

// agentDialer dials the hub as cluster with token.
func (e *hubEnv) agentDialer(t *testing.T, cluster, token string) *tunnel.Dialer {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set(tunnel.HeaderCluster, cluster)
	h.Set(tunnel.HeaderAgentVersion, "test")
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	return &tunnel.Dialer{
		URL:              "wss://" + e.srv.Addr().String(),
		TLSConfig:        &tls.Config{RootCAs: e.ca.Pool, MinVersion: tls.VersionTLS12},
		Header:           h,
		Proxy:            noProxy,
		HandshakeTimeout: hubtest.WaitBound,
		Config:           cfg,
	}
}

// startAgent runs an in-process agent for cluster alpha and waits until the
// hub has registered it.
func (e *hubEnv) startAgent(t *testing.T) {
	a, err := agent.New(agent.Config{
		Dialer:     e.agentDialer(t, "alpha", alphaToken),
		Backoff:    &tunnel.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, ResetAfter: time.Minute},
		Member:     e.member.restConfig(),
		DenyGroups: []string{"system:masters"},
		Log:        testutil.Logger(t),
		Registry:   prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	// Registered after the hub's cleanup, so it runs first: the agent stops
	// before the hub, and cannot reconnect into a hub that is shutting down.
	testutil.Background(t, "agent Run", hubtest.WaitBound, a.Run)
	// The hub registers the session as it upgrades, a moment before the
	// agent's dial returns: wait for both sides.
	require.Eventually(t, func() bool {
		_, err := e.srv.Sessions().Get("alpha")
		return err == nil
	}, hubtest.WaitBound, 5*time.Millisecond, "the agent never registered")
	require.Eventually(t, a.Connected, hubtest.WaitBound, 5*time.Millisecond, "the agent never saw its tunnel up")
}

func (e *hubEnv) get(t *testing.T, path string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, e.url+path, nil)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := e.client.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func bearerHeader(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}
