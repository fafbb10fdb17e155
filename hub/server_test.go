package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/agent"
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
	m.mu.Lock()
	m.reqs = append(m.reqs, r.Clone(context.Background()))
	m.mu.Unlock()
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
	pemBytes := certPEM(m.srv.Certificate().Raw)
	return &rest.Config{
		Host:            m.srv.URL,
		BearerToken:     agentSAToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: pemBytes},
	}
}

// hubEnv is a running hub with one agent connected for cluster alpha; beta
// is known but has no agent.
type hubEnv struct {
	ca     *testCA
	srv    *Server
	url    string
	member *fakeMember
	client *http.Client
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

func startHub(t *testing.T) *hubEnv {
	ca := newTestCA(t, "backhaul test CA")
	dir := t.TempDir()
	agents, err := NewAgentTokens(writeFile(t, filepath.Join(dir, "agents.csv"),
		alphaToken+",alpha\n"+betaToken+",beta\n"), "")
	require.NoError(t, err)
	callers, err := LoadStaticTokens(writeFile(t, filepath.Join(dir, "callers.csv"),
		`alice-token,alice,uid-alice,"dev,ops"`+"\n"+
			`root-token,root,uid-root,"dev,system:masters"`+"\n"))
	require.NoError(t, err)

	tcfg := tunnel.DefaultConfig()
	srv, err := New(Config{
		Listen:        "127.0.0.1:0",
		ConnectListen: "127.0.0.1:0",
		ConnectTLS:    true,
		TLS: &tls.Config{
			Certificates: []tls.Certificate{ca.serverCert(t)},
			ClientCAs:    ca.pool,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		},
		AgentAuth:       agents,
		Clusters:        agents,
		Authn:           Union{ClientCerts{CAs: []*x509.Certificate{ca.cert}}, callers},
		Authz:           AllowAuthenticated{},
		Tunnel:          tcfg,
		DialTimeout:     5 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Log:             testLogger(t),
		Registry:        prometheus.NewRegistry(),
	})
	require.NoError(t, err)

	env := &hubEnv{ca: ca, srv: srv, member: newFakeMember(t)}
	testutil.Background(t, "hub Run", waitBound, srv.Run)
	require.Eventually(t, func() bool { return srv.Addr() != nil }, waitBound, 5*time.Millisecond, "hub never listened")
	env.url = "https://" + srv.Addr().String()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}, Proxy: noProxy}
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
	cfg.Logger = testLogger(t)
	return &tunnel.Dialer{
		URL:              "wss://" + e.srv.Addr().String(),
		TLSConfig:        &tls.Config{RootCAs: e.ca.pool, MinVersion: tls.VersionTLS12},
		Header:           h,
		Proxy:            noProxy,
		HandshakeTimeout: waitBound,
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
		Log:        testLogger(t),
		Registry:   prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	// Registered after the hub's cleanup, so it runs first: the agent stops
	// before the hub, and cannot reconnect into a hub that is shutting down.
	testutil.Background(t, "agent Run", waitBound, a.Run)
	require.Eventually(t, func() bool {
		_, err := e.srv.Registry().Get("alpha")
		return err == nil
	}, waitBound, 5*time.Millisecond, "the agent never registered")
	assert.True(t, a.Connected())
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

func bearerHeader(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

func TestServerEndToEnd(t *testing.T) {
	env := startHub(t)
	env.startAgent(t)

	t.Run("caller identity is impersonated", func(t *testing.T) {
		h := bearerHeader("alice-token")
		h.Set("Impersonate-User", "system:admin")
		h.Add("Impersonate-Group", "system:masters")
		h.Set("Impersonate-Uid", "0")
		h.Set("Impersonate-Extra-Scopes", "all")
		h.Set("X-Remote-User", "system:admin")
		resp := env.get(t, "/clusters/alpha/api/v1/namespaces", h)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		assert.JSONEq(t, `{"kind":"NamespaceList","apiVersion":"v1","items":[]}`, string(body))

		got := env.member.last(t)
		assert.Equal(t, "/api/v1/namespaces", got.URL.Path)
		assert.Equal(t, []string{"alice"}, got.Header.Values("Impersonate-User"))
		assert.Equal(t, []string{"dev", "ops"}, got.Header.Values("Impersonate-Group"))
		assert.Equal(t, []string{"uid-alice"}, got.Header.Values("Impersonate-Uid"))
		assert.Empty(t, got.Header.Values("Impersonate-Extra-Scopes"))
		assert.Empty(t, got.Header.Values("X-Remote-User"))
		// The agent's own credentials, never the caller's.
		assert.Equal(t, []string{"Bearer " + agentSAToken}, got.Header.Values("Authorization"))
		assert.Equal(t, resp.Header.Get("Backhaul-Request-Id"), got.Header.Get("Backhaul-Request-Id"))
	})

	t.Run("client certificate caller", func(t *testing.T) {
		cert := env.ca.clientCert(t, "carol", "qa")
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.ca.pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, Proxy: noProxy}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(env.url + "/clusters/alpha/api")
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		got := env.member.last(t)
		assert.Equal(t, []string{"carol"}, got.Header.Values("Impersonate-User"))
		assert.Equal(t, []string{"qa"}, got.Header.Values("Impersonate-Group"))
	})

	t.Run("agent drops denied groups", func(t *testing.T) {
		resp := env.get(t, "/clusters/alpha/api", bearerHeader("root-token"))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		got := env.member.last(t)
		assert.Equal(t, []string{"root"}, got.Header.Values("Impersonate-User"))
		assert.Equal(t, []string{"dev"}, got.Header.Values("Impersonate-Group"))
	})

	refusals := []struct {
		name     string
		path     string
		header   http.Header
		wantCode int
		wantMsg  string
	}{
		{name: "no token", path: "/clusters/alpha/api/v1/namespaces", wantCode: http.StatusUnauthorized},
		{name: "unknown token", path: "/clusters/alpha/api/v1/namespaces", header: bearerHeader("mallory-token"), wantCode: http.StatusUnauthorized},
		{name: "agent token is not a caller token", path: "/clusters/alpha/api", header: bearerHeader(alphaToken), wantCode: http.StatusUnauthorized},
		{name: "unknown cluster", path: "/clusters/gamma/api/v1/namespaces", header: bearerHeader("alice-token"), wantCode: http.StatusNotFound},
		{name: "invalid cluster name", path: "/clusters/Gamma_1/api", header: bearerHeader("alice-token"), wantCode: http.StatusNotFound},
		{name: "known cluster without agent", path: "/clusters/beta/api/v1/namespaces", header: bearerHeader("alice-token"), wantCode: http.StatusServiceUnavailable, wantMsg: "cluster beta is not connected"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			before := env.member.count()
			resp := env.get(t, tc.path, tc.header)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.wantCode, resp.StatusCode, "body: %s", body)
			st := decodeStatus(t, resp.Header.Get("Content-Type"), body)
			assert.EqualValues(t, tc.wantCode, st.Code)
			if tc.wantMsg != "" {
				assert.Equal(t, tc.wantMsg, st.Message)
			}
			assert.Equal(t, before, env.member.count(), "a refused request reached the member")
		})
	}

	t.Run("wrong agent token is refused", func(t *testing.T) {
		for _, c := range []struct{ cluster, token string }{
			{"beta", "beta-token-wrong-0123456789"},
			{"beta", alphaToken},
			{"gamma", alphaToken},
			{"", alphaToken},
		} {
			sess, err := env.agentDialer(t, c.cluster, c.token).Dial(context.Background())
			if sess != nil {
				_ = sess.Close()
			}
			var he *tunnel.HandshakeError
			require.ErrorAs(t, err, &he, "cluster %q", c.cluster)
			assert.Equal(t, http.StatusUnauthorized, he.StatusCode)
			assert.True(t, tunnel.IsPermanent(err))
		}
		sessions := env.srv.Registry().Sessions()
		require.Len(t, sessions, 1)
		assert.Equal(t, "alpha", sessions[0].Cluster)
		_, err := env.srv.Registry().Get("beta")
		require.ErrorIs(t, err, ErrNotConnected)
	})

	t.Run("tunnel endpoint wants GET", func(t *testing.T) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, env.url+tunnel.Path, nil)
		require.NoError(t, err)
		resp, err := env.client.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	})

	t.Run("status page", func(t *testing.T) {
		h := bearerHeader("alice-token")
		h.Set("Accept", "application/json")
		resp := env.get(t, "/status", h)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var rows []statusRow
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&rows))
		require.Len(t, rows, 1)
		assert.Equal(t, "alpha", rows[0].Cluster)
		assert.Equal(t, "test", rows[0].AgentVersion)
		assert.NotEqual(t, "-", rows[0].RTT)

		anon := env.get(t, "/status", nil)
		assert.Equal(t, http.StatusUnauthorized, anon.StatusCode)
	})

	t.Run("watch streams chunk by chunk", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.url+"/clusters/alpha"+watchPath+"?watch=true", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer alice-token")
		resp, err := env.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)

		// The member holds chunk 2 back until chunk 1 has reached the
		// caller; any buffering on the way would hold chunk 1 too.
		readChunk := func(n int) (string, error) {
			type result struct {
				s   string
				err error
			}
			got := make(chan result, 1)
			go func() {
				buf := make([]byte, n)
				_, err := io.ReadFull(resp.Body, buf)
				got <- result{string(buf), err}
			}()
			select {
			case r := <-got:
				return r.s, r.err
			case <-time.After(waitBound):
				cancel() // unblocks the reader
				<-got
				return "", errors.New("chunk did not arrive: the response is buffered somewhere")
			}
		}
		c1, err := readChunk(len(chunk1))
		require.NoError(t, err)
		assert.Equal(t, chunk1, c1)

		close(env.member.next)
		c2, err := readChunk(len(chunk2))
		require.NoError(t, err)
		assert.Equal(t, chunk2, c2)
		rest, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Empty(t, rest)
	})
}

// TestServerShutdownEndsSessions: when the hub stops, the agent's tunnel is
// closed rather than left dangling.
func TestServerShutdownEndsSessions(t *testing.T) {
	env := startHub(t)
	sess, err := env.agentDialer(t, "alpha", alphaToken).Dial(context.Background())
	require.NoError(t, err)
	defer sess.Close()
	require.Eventually(t, func() bool {
		_, err := env.srv.Registry().Get("alpha")
		return err == nil
	}, waitBound, 5*time.Millisecond)

	env.srv.Registry().CloseAll()
	select {
	case <-sess.Done():
	case <-time.After(waitBound):
		t.Fatal("the agent's session outlived CloseAll")
	}
	require.Eventually(t, func() bool { return len(env.srv.Registry().Sessions()) == 0 }, waitBound, 5*time.Millisecond)
}

func TestNewRequiresConfig(t *testing.T) {
	_, err := New(Config{})
	require.Error(t, err)
}

func TestServerListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ca := newTestCA(t, "ca")
	srv, err := New(Config{
		Listen: ln.Addr().String(), TLS: &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}, MinVersion: tls.VersionTLS12},
		AgentAuth: staticAgents{}, Clusters: clusterSet{}, Authn: Union{}, Authz: AllowAuthenticated{},
		Tunnel: tunnel.DefaultConfig(), Log: testLogger(t), Registry: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	require.Error(t, srv.Run(context.Background()))
}

type staticAgents struct{}

func (staticAgents) AuthenticateAgent(*http.Request) (string, error) { return "", errAgentAuth }

// certPEM encodes a DER certificate.
func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
