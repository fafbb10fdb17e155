package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

func TestSessionLifetime(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	agent := func(notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{NotAfter: notAfter, Subject: pkix.Name{CommonName: "backhaul-agent:edge"}, URIs: []*url.URL{identity.AgentIdentity{Cluster: "edge", UID: "u1"}.URI()}}
	}
	withTLS := func(chain ...*x509.Certificate) *http.Request {
		r := httptest.NewRequest(http.MethodGet, tunnel.Path, nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: chain}
		return r
	}
	plain := httptest.NewRequest(http.MethodGet, tunnel.Path, nil)
	for _, tc := range []struct {
		name   string
		r      *http.Request
		maxAge time.Duration
		u      float64
		want   lifetime
	}{
		{name: "token without max age lives as long as it stays up", r: plain},
		{name: "token with max age", r: plain, maxAge: 10 * time.Hour, u: 0, want: lifetime{now.Add(10 * time.Hour), ExpiredMaxAge}},
		{name: "max age jitter takes up to a fifth off", r: plain, maxAge: 10 * time.Hour, u: 0.5, want: lifetime{now.Add(9 * time.Hour), ExpiredMaxAge}},
		{name: "agent certificate ends at its expiry", r: withTLS(agent(now.Add(time.Hour))), want: lifetime{now.Add(time.Hour), ExpiredCertificate}},
		{name: "certificate before max age", r: withTLS(agent(now.Add(time.Hour))), maxAge: 24 * time.Hour, want: lifetime{now.Add(time.Hour), ExpiredCertificate}},
		{name: "max age before certificate", r: withTLS(agent(now.Add(48 * time.Hour))), maxAge: 10 * time.Hour, want: lifetime{now.Add(10 * time.Hour), ExpiredMaxAge}},
		{name: "an intermediate that expires first bounds it", r: withTLS(agent(now.Add(time.Hour)), &x509.Certificate{NotAfter: now.Add(time.Minute)}), want: lifetime{now.Add(time.Minute), ExpiredCertificate}},
		// An expired certificate cannot have authenticated the agent: a
		// token next to it did, and the certificate must not end the
		// session at once (a reconnect loop).
		{name: "expired stray certificate next to a token", r: withTLS(agent(now.Add(-time.Minute))), maxAge: time.Hour, want: lifetime{now.Add(time.Hour), ExpiredMaxAge}},
		{name: "a caller's certificate is not the agent's credential", r: withTLS(&x509.Certificate{NotAfter: now.Add(time.Minute), Subject: pkix.Name{CommonName: "alice"}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, sessionLifetime(tc.r, now, tc.maxAge, tc.u))
		})
	}
}

// agentCert is an agent certificate of cluster edge that expires at
// notAfter (x509 keeps whole seconds).
func agentCert(t *testing.T, ca *hubtest.CA, notAfter time.Time) tls.Certificate {
	t.Helper()
	return ca.AgentCert(t, identity.AgentIdentity{Cluster: "edge", UID: "u1"}, notAfter)
}

// lifetimeEndpoint serves an endpoint that requests client certificates,
// as the hub's listener does.
func lifetimeEndpoint(t *testing.T, cfg EndpointConfig) (*Registry, *prometheus.Registry, string) {
	t.Helper()
	r, m, reg := newTestRegistry(t)
	cfg.Tunnel, cfg.Log, cfg.MaxHandshakes = tunnel.DefaultConfig(), testutil.Logger(t), 4
	ep, err := NewEndpoint(r, m, cfg)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(ep)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(func() { r.CloseAll(); srv.Close() })
	return r, reg, "wss://" + srv.Listener.Addr().String()
}

// drains serves the agent's side of s, reporting each drain the hub sends
// (as the agent's supervisor would act on it).
func drains(t *testing.T, s *tunnel.Session) <-chan time.Duration {
	got := make(chan time.Duration, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ctx, func(_ context.Context, in *tunnel.Incoming) {
			if in.Request.Kind != tunnel.KindDrain {
				_ = in.Reject(tunnel.CodeNotAllowed, "test agent")
				return
			}
			if c, err := in.Accept(); err == nil {
				_ = c.Close()
			}
			got <- in.Request.Timeout
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return got
}

// The attacker's window: an agent whose certificate expired (not renewed:
// its cluster's credentials were stolen, or the agent is gone) kept its
// session, and the hub's traffic, for as long as the connection stayed
// up. The hub now ends the session at the certificate's expiry: no new
// streams from then, the agent told to reconnect (with a renewed
// certificate), the streams in flight let finish within the grace.
func TestEndpointClosesSessionWhenCertificateExpires(t *testing.T) {
	ca := hubtest.NewCA(t, "agents")
	r, reg, url := lifetimeEndpoint(t, EndpointConfig{Auth: gate{open: closedChan()}, CloseGrace: time.Hour})
	cert := agentCert(t, ca, time.Now().Add(2*time.Second))
	d := &tunnel.Dialer{URL: url, HandshakeTimeout: hubtest.WaitBound, TLSConfig: &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{cert},
	}}
	agent, err := d.Dial(context.Background())
	require.NoError(t, err)
	defer agent.Close()
	got := drains(t, agent)

	waitSession(t, r, "edge")
	select {
	case grace := <-got:
		assert.Equal(t, time.Hour, grace, "the agent is told how long it has")
	case <-time.After(hubtest.WaitBound):
		t.Fatal("no drain at the certificate's expiry")
	}
	assert.Equal(t, 1.0, hubtest.Counter(t, reg, "backhaul_hub_sessions_expired_total", map[string]string{"reason": ExpiredCertificate}))
	select {
	case <-agent.Done():
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the expired session, idle, was not closed")
	}
	require.Eventually(t, func() bool { return !r.Connected("edge") }, hubtest.WaitBound, 5*time.Millisecond)
}

// While a retired session still carries streams, it takes no new ones,
// and it closes once they are done.
func TestRetiredSessionFinishesItsStreams(t *testing.T) {
	ca := hubtest.NewCA(t, "agents")
	r, reg, url := lifetimeEndpoint(t, EndpointConfig{Auth: gate{open: closedChan()}, CloseGrace: time.Hour})
	cert := agentCert(t, ca, time.Now().Add(2*time.Second))
	d := &tunnel.Dialer{URL: url, HandshakeTimeout: hubtest.WaitBound, TLSConfig: &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{cert},
	}}
	agent, err := d.Dial(context.Background())
	require.NoError(t, err)
	defer agent.Close()
	// The agent accepts API server streams and holds them open until
	// release, like a watch.
	release := make(chan struct{})
	drained := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = agent.Serve(ctx, func(ctx context.Context, in *tunnel.Incoming) {
			c, err := in.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if in.Request.Kind == tunnel.KindDrain {
				drained <- struct{}{}
				return
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
		})
	}()
	defer func() { cancel(); <-served }()

	s := waitSession(t, r, "edge")
	watch, err := s.tunnel.Open(context.Background(), tunnel.Request{Kind: tunnel.KindAPIServer})
	require.NoError(t, err)
	defer watch.Close()

	select {
	case <-drained:
	case <-time.After(hubtest.WaitBound):
		t.Fatal("no drain at the certificate's expiry")
	}
	assert.Equal(t, 1.0, hubtest.Counter(t, reg, "backhaul_hub_sessions_expired_total", map[string]string{"reason": ExpiredCertificate}))
	_, err = r.Get("edge")
	require.ErrorIs(t, err, ErrNotConnected, "a retired session carries no new streams")
	select {
	case <-agent.Done():
		t.Fatal("the session closed under a stream in flight, within its grace")
	default:
	}
	// The member ends the watch; the hub's side reads its end and closes.
	close(release)
	_, _ = io.Copy(io.Discard, watch)
	_ = watch.Close()
	select {
	case <-agent.Done():
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the retired session stayed up after its last stream ended")
	}
}

// A static token never expires: without a maximum age, a leaked token
// removed from the hub's files would keep its session. --session-max-age
// ends it, so the agent must authenticate again.
func TestEndpointMaxAgeEndsTokenSessions(t *testing.T) {
	r, reg, url := lifetimeEndpoint(t, EndpointConfig{Auth: gate{open: closedChan()}, MaxAge: 2 * time.Second, CloseGrace: time.Hour})
	agent, err := dialAgent(url)
	require.NoError(t, err)
	defer agent.Close()
	got := drains(t, agent)
	waitSession(t, r, "edge")
	select {
	case <-got:
	case <-time.After(hubtest.WaitBound):
		t.Fatal("no drain at the session's maximum age")
	}
	select {
	case <-agent.Done():
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the session outlived its maximum age")
	}
	assert.Equal(t, 1.0, hubtest.Counter(t, reg, "backhaul_hub_sessions_expired_total", map[string]string{"reason": ExpiredMaxAge}))
}

func TestEndpointRefusesNegativeLifetimes(t *testing.T) {
	r, m, _ := newTestRegistry(t)
	for _, cfg := range []EndpointConfig{{MaxAge: -time.Second}, {CloseGrace: -time.Second}} {
		cfg.Auth, cfg.Tunnel, cfg.Log, cfg.MaxHandshakes = gate{open: closedChan()}, tunnel.DefaultConfig(), testutil.Logger(t), 1
		_, err := NewEndpoint(r, m, cfg)
		assert.Error(t, err)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func waitSession(t *testing.T, r *Registry, cluster string) *Session {
	t.Helper()
	var s *Session
	require.Eventually(t, func() bool {
		var err error
		s, err = r.Get(cluster)
		return err == nil
	}, hubtest.WaitBound, 5*time.Millisecond)
	return s
}
