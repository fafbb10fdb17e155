package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/agent"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// uids registers cluster alpha under one UID.
type uids struct{}

func (uids) UID(cluster string) (types.UID, bool) { return "uid-alpha", cluster == "alpha" }

// issueAgentCert is alpha's agent certificate from ca, valid until
// notAfter, as the hub's enrollment issues it.
func issueAgentCert(t *testing.T, ca *hubtest.CA, notAfter time.Time) *tls.Certificate {
	t.Helper()
	c := ca.AgentCert(t, identity.AgentIdentity{Cluster: "alpha", UID: "uid-alpha"}, notAfter)
	return &c
}

// A real agent whose certificate is short-lived and renewed before it
// expires (as agent.Credentials does at two thirds of its life): at the
// old certificate's expiry the hub ends the session, the agent has
// already connected again with the renewed certificate, and callers never
// see the cluster go away.
func TestSessionEndsAtCertificateExpiryAndAgentReconnects(t *testing.T) {
	ca := hubtest.NewCA(t, "backhaul test CA")
	dir := t.TempDir()
	callers, err := auth.LoadStaticTokens(writeFile(t, filepath.Join(dir, "callers.csv"), `alice-token,alice,uid-alice,"dev"`+"\n"))
	require.NoError(t, err)
	tokens, err := auth.NewAgentTokens(writeFile(t, filepath.Join(dir, "agents.csv"), alphaToken+",alpha\n"), "")
	require.NoError(t, err)

	cfg := DefaultConfig()
	cfg.Replica = "hub-test"
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCert(t)},
		ClientCAs:    ca.Pool, ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
	}
	cfg.AgentAuth = auth.AgentAuthChain{&auth.AgentCerts{Roots: func() *x509.CertPool { return ca.Pool }, Clusters: uids{}}}
	cfg.Clusters, cfg.Authn, cfg.Authz = tokens, callers, auth.AllowAuthenticated{}
	cfg.DialTimeout, cfg.ShutdownGrace, cfg.ShutdownDelay = 5*time.Second, 5*time.Second, 0
	cfg.Log, cfg.Metrics = testutil.Logger(t), prometheus.NewRegistry()
	srv, err := New(cfg)
	require.NoError(t, err)
	testutil.Background(t, "hub Run", hubtest.WaitBound, srv.Run)
	require.Eventually(t, func() bool { return srv.Addr() != nil }, hubtest.WaitBound, 5*time.Millisecond, "hub never listened")
	e := &hubEnv{ca: ca, srv: srv, url: "https://" + srv.Addr().String(), member: newFakeMember(t)}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}, Proxy: noProxy}
	e.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)

	// The first certificate lives 12 s: the hub asks for a replacement
	// 1.2 s before it expires. It is renewed at once, so the replacement
	// presents the new one.
	var current atomic.Pointer[tls.Certificate]
	first := issueAgentCert(t, ca, time.Now().Add(12*time.Second))
	current.Store(first)
	d := &tunnel.Dialer{
		URL: "wss://" + srv.Addr().String(), Proxy: noProxy, HandshakeTimeout: hubtest.WaitBound, Config: tunnel.DefaultConfig(),
		Header: http.Header{tunnel.HeaderCluster: {"alpha"}, tunnel.HeaderAgentVersion: {"test"}},
		TLSConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return current.Load(), nil }},
	}
	d.Config.Logger = testutil.Logger(t)
	a, err := agent.New(agent.Config{
		Dialer: d, Backoff: &tunnel.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, ResetAfter: time.Minute},
		Member: e.member.restConfig(), DenyGroups: []string{"system:masters"}, Log: testutil.Logger(t), Registry: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	testutil.Background(t, "agent Run", hubtest.WaitBound, a.Run)
	require.Eventually(t, func() bool { return len(srv.Sessions().Sessions()) == 1 }, hubtest.WaitBound, 5*time.Millisecond)
	firstID := srv.Sessions().Sessions()[0].Info().ID
	current.Store(issueAgentCert(t, ca, time.Now().Add(time.Hour)))

	// Callers keep working across the expiry: every request succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second+hubtest.WaitBound)
	defer cancel()
	requests := 0
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/clusters/alpha/api", nil)
		require.NoError(t, err)
		req.Header = bearerHeader("alice-token")
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		requests++
		require.Equal(t, http.StatusOK, resp.StatusCode, "request %d, around the certificate's expiry", requests)
		if !slices.ContainsFunc(srv.Sessions().Sessions(), func(s *session.Session) bool { return s.Info().ID == firstID }) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the session outlived its certificate")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The one left is the replacement, on the renewed certificate.
	assert.Equal(t, 1.0, hubtest.Counter(t, cfg.Metrics, "backhaul_hub_sessions_expired_total", map[string]string{"reason": "certificate"}))
	ss := srv.Sessions().Sessions()
	require.Len(t, ss, 1, "the expired session was replaced")
	assert.True(t, ss[0].Info().Since.After(first.Leaf.NotAfter.Add(-2*time.Second)), "the replacement connected just before the expiry")
	resp := e.get(t, "/clusters/alpha/api", bearerHeader("alice-token"))
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	t.Logf("%d requests succeeded across the expiry", requests)
}
