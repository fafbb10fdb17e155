package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// fakeHub accepts every tunnel and hands the hub's end to the test.
type fakeHub struct {
	srv      *httptest.Server
	sessions chan *tunnel.Session
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{sessions: make(chan *tunnel.Session, 4)}
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testLogger(t)
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := tunnel.Accept(w, r, cfg)
		if err != nil {
			return
		}
		h.sessions <- s
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHub) dialer(t *testing.T) *tunnel.Dialer {
	pool := x509.NewCertPool()
	pool.AddCert(h.srv.Certificate())
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testLogger(t)
	return &tunnel.Dialer{
		URL:              "wss://" + h.srv.Listener.Addr().String(),
		TLSConfig:        &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
		HandshakeTimeout: waitBound,
		Config:           cfg,
	}
}

// runAgent starts an agent against hub and returns the hub's end of its
// tunnel once connected.
func runAgent(t *testing.T, hub *fakeHub, cfg Config) (*Agent, *tunnel.Session) {
	cfg.Dialer = hub.dialer(t)
	cfg.Backoff = &tunnel.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, ResetAfter: time.Minute}
	cfg.Log = testLogger(t)
	cfg.Registry = prometheus.NewRegistry()
	a, err := New(cfg)
	require.NoError(t, err)
	done := testutil.Background(t, "agent Run", waitBound, a.Run)
	select {
	case s := <-hub.sessions:
		t.Cleanup(func() { _ = s.Close() })
		require.Eventually(t, a.Connected, waitBound, 5*time.Millisecond)
		return a, s
	case <-done:
		t.Fatal("agent Run returned early (its error is reported at cleanup)")
	case <-time.After(waitBound):
		t.Fatal("the agent never connected")
	}
	return nil, nil
}

// echoServer echoes TCP connections until the client half-closes.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// closedPort is a port nothing listens on, on 127.0.0.3: nothing else in
// these tests binds that address, so the kernel cannot hand the port to a
// later listener (it did, on 127.0.0.1, once in CI).
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	require.NoError(t, err)
	_, port, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	return port
}

func TestAgentAPIServerStreams(t *testing.T) {
	member := newFakeMember(t)
	hub := newFakeHub(t)
	_, sess := runAgent(t, hub, Config{Member: member.restConfig(), DenyGroups: []string{"system:masters"}})

	conn, err := sess.Open(context.Background(), tunnel.Request{Kind: tunnel.KindAPIServer, RequestID: "req-1"})
	require.NoError(t, err)
	defer conn.Close()
	br := bufio.NewReader(conn)
	// One stream carries a keep-alive HTTP/1.1 connection: two requests.
	for i, user := range []string{"alice", "bob"} {
		req, err := http.NewRequest(http.MethodGet, "http://alpha.cluster.backhaul/api?i="+strconv.Itoa(i), nil)
		require.NoError(t, err)
		req.Header.Set("Impersonate-User", user)
		req.Header.Add("Impersonate-Group", "dev")
		req.Header.Add("Impersonate-Group", "system:masters")
		req.Header.Set("Authorization", "Bearer smuggled")
		require.NoError(t, req.Write(conn))
		resp, err := http.ReadResponse(br, req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	}
	reqs := member.requests()
	require.Len(t, reqs, 2)
	for i, user := range []string{"alice", "bob"} {
		assert.Equal(t, []string{user}, reqs[i].Header.Values("Impersonate-User"))
		assert.Equal(t, []string{"dev"}, reqs[i].Header.Values("Impersonate-Group"))
		assert.Equal(t, []string{"Bearer " + agentSAToken}, reqs[i].Header.Values("Authorization"))
	}
}

func TestAgentTCPStreams(t *testing.T) {
	echoAddr := echoServer(t)
	_, echoPort, err := net.SplitHostPort(echoAddr)
	require.NoError(t, err)
	deadPort := closedPort(t)
	allow, err := ParseAllowlist([]string{"127.0.0.1:" + echoPort, "127.0.0.3:" + deadPort, "0.0.0.0/0:80"})
	require.NoError(t, err)
	errNoSuchHost := errors.New("no such host")
	resolve := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "echo.internal":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "metadata.internal":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		}
		return nil, errNoSuchHost
	}

	member := newFakeMember(t)
	hub := newFakeHub(t)
	_, sess := runAgent(t, hub, Config{Member: member.restConfig(), Allow: allow, Resolve: resolve})

	tests := []struct {
		name     string
		address  string
		wantCode tunnel.Code // CodeOK: the stream echoes
	}{
		{name: "allowlisted address", address: echoAddr, wantCode: tunnel.CodeOK},
		{name: "allowlisted name", address: "echo.internal:" + echoPort, wantCode: tunnel.CodeOK},
		{name: "not in the allowlist", address: "127.0.0.2:" + echoPort, wantCode: tunnel.CodeNotAllowed},
		{name: "wrong port", address: "127.0.0.1:22", wantCode: tunnel.CodeNotAllowed},
		{name: "metadata address", address: "169.254.169.254:80", wantCode: tunnel.CodeNotAllowed},
		{name: "name resolving to metadata", address: "metadata.internal:80", wantCode: tunnel.CodeNotAllowed},
		{name: "name that does not resolve", address: "nowhere.internal:80", wantCode: tunnel.CodeRefused},
		{name: "nothing listening", address: "127.0.0.3:" + deadPort, wantCode: tunnel.CodeRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			conn, err := sess.Open(ctx, tunnel.Request{Kind: tunnel.KindTCP, Address: tc.address, Timeout: 5 * time.Second})
			if tc.wantCode != tunnel.CodeOK {
				var de *tunnel.DialError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, tc.wantCode, de.Code, "message: %s", de.Message)
				return
			}
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("ping through the tunnel"))
			require.NoError(t, err)
			require.NoError(t, conn.Close()) // half-close reaches the echo server as EOF
			got, err := io.ReadAll(conn)
			require.NoError(t, err)
			assert.Equal(t, "ping through the tunnel", string(got))
		})
	}
}

func TestAgentEmptyAllowlistRefusesTCP(t *testing.T) {
	echoAddr := echoServer(t)
	hub := newFakeHub(t)
	_, sess := runAgent(t, hub, Config{Member: newFakeMember(t).restConfig()})
	_, err := sess.Open(context.Background(), tunnel.Request{Kind: tunnel.KindTCP, Address: echoAddr})
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, tunnel.CodeNotAllowed, de.Code)
}

// TestAgentHealth: liveness is the process, readiness the tunnel.
func TestAgentHealth(t *testing.T) {
	a, err := New(Config{
		Dialer: &tunnel.Dialer{URL: "wss://127.0.0.1:1"}, Member: newFakeMember(t).restConfig(),
		Log: testLogger(t), Registry: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	h := a.adminHandler()
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	// The hub is unreachable: the agent is alive, not ready.
	assert.Equal(t, http.StatusOK, get("/healthz"), "a hub outage must not restart the agent")
	assert.Equal(t, http.StatusServiceUnavailable, get("/readyz"))
	a.sessions.Store(1)
	assert.Equal(t, http.StatusOK, get("/healthz"))
	assert.Equal(t, http.StatusOK, get("/readyz"))
	assert.Equal(t, http.StatusOK, get("/metrics"))
	assert.Equal(t, http.StatusNotFound, get("/debug/pprof/"), "profiles only with --profiling")
}

// TestAgentProfiling: --profiling serves Go's profiles on the admin port.
func TestAgentProfiling(t *testing.T) {
	a, err := New(Config{
		Dialer: &tunnel.Dialer{URL: "wss://127.0.0.1:1"}, Member: newFakeMember(t).restConfig(),
		Profiling: true, Log: testLogger(t), Registry: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	a.adminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/goroutine?debug=1", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), "goroutine profile:")
}

// TestAgentRunAdminListenError: a bad admin address is reported, not a hang.
func TestAgentRunAdminListenError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	a, err := New(Config{
		Dialer: &tunnel.Dialer{URL: "wss://127.0.0.1:1"}, Member: newFakeMember(t).restConfig(),
		AdminListen: taken.Addr().String(), Log: testLogger(t), Registry: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	select {
	case err := <-runErr:
		require.Error(t, err)
	case <-time.After(waitBound):
		cancel()
		<-runErr
		t.Fatal("Run hung instead of reporting that the admin address is taken")
	}
}

func TestNewRequiresConfig(t *testing.T) {
	member := newFakeMember(t).restConfig()
	full := func() Config {
		return Config{Dialer: &tunnel.Dialer{}, Member: member, Log: testLogger(t), Registry: prometheus.NewRegistry()}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{name: "no dialer", mutate: func(c *Config) { c.Dialer = nil }},
		{name: "no member", mutate: func(c *Config) { c.Member = nil }},
		{name: "no logger", mutate: func(c *Config) { c.Log = nil }},
		{name: "no registry", mutate: func(c *Config) { c.Registry = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full()
			tc.mutate(&cfg)
			_, err := New(cfg)
			require.Error(t, err)
		})
	}
	a, err := New(full())
	require.NoError(t, err)
	// With no allowlist, the member API server is the only TCP destination.
	api, err := netip.ParseAddrPort(a.api.hostPort())
	require.NoError(t, err)
	ok, _, _ := a.cfg.Allow.Check(api)
	assert.True(t, ok, "the API server is admitted by default")
	ok, _, _ = a.cfg.Allow.Check(netip.AddrPortFrom(api.Addr(), api.Port()+1))
	assert.False(t, ok, "nothing else is")
	assert.False(t, a.Connected())
}
