package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// gate authenticates every agent as cluster edge, once let through.
type gate struct{ open chan struct{} }

func (g gate) AuthenticateAgent(r *http.Request) (string, error) {
	select {
	case <-g.open:
		return "edge", nil
	case <-r.Context().Done():
		return "", errors.New("gave up")
	}
}

func newTestEndpoint(t *testing.T, auth AgentAuthenticator, maxHandshakes int) (*Endpoint, *Registry, string) {
	r, m, _ := newTestRegistry(t)
	ep, err := NewEndpoint(r, m, EndpointConfig{
		Auth: auth, Tunnel: tunnel.DefaultConfig(), Log: testutil.Logger(t),
		Replica: "hub-b", Replicas: func() int { return 3 }, MaxHandshakes: maxHandshakes,
	})
	require.NoError(t, err)
	srv := httptest.NewTLSServer(ep)
	t.Cleanup(func() { r.CloseAll(); srv.Close() })
	return ep, r, "wss://" + srv.Listener.Addr().String()
}

func dialAgent(url string) (*tunnel.Session, error) {
	d := &tunnel.Dialer{URL: url, TLSConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: hubtest.WaitBound}
	return d.Dial(context.Background())
}

func TestEndpointNamesItsReplica(t *testing.T) {
	g := gate{open: make(chan struct{})}
	close(g.open)
	_, r, url := newTestEndpoint(t, g, 4)
	s, err := dialAgent(url)
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, "hub-b", s.Replica())
	assert.Equal(t, 3, s.Replicas())
	require.Eventually(t, func() bool { return r.Connected("edge") }, hubtest.WaitBound, 5*time.Millisecond)
}

func TestEndpointBoundsHandshakes(t *testing.T) {
	g := gate{open: make(chan struct{})}
	ep, _, url := newTestEndpoint(t, g, 1)
	first := make(chan error, 1)
	go func() {
		s, err := dialAgent(url)
		if s != nil {
			defer s.Close()
		}
		first <- err
	}()
	// While the first handshake waits on authentication, a second is told
	// to come back later.
	require.Eventually(t, func() bool { return len(ep.handshakes) == 1 }, hubtest.WaitBound, 5*time.Millisecond)
	_, err := dialAgent(url)
	var he *tunnel.HandshakeError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
	assert.Equal(t, 5*time.Second, he.RetryAfter)
	close(g.open)
	require.NoError(t, <-first, "the first handshake completes")
}

func TestEndpointRefusesWhileDraining(t *testing.T) {
	g := gate{open: make(chan struct{})}
	close(g.open)
	ep, _, url := newTestEndpoint(t, g, 4)
	ep.Drain()
	_, err := dialAgent(url)
	var he *tunnel.HandshakeError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
	assert.Equal(t, time.Second, he.RetryAfter)
	assert.False(t, tunnel.IsPermanent(err))

	// The refusal closes the connection, so an agent whose HTTP client
	// pools connections still goes back to the load balancer.
	req, err := http.NewRequest(http.MethodGet, strings.Replace(url, "wss://", "https://", 1), nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.True(t, resp.Close, "Connection: close on a draining refusal")
}

type refuseAll struct{}

func (refuseAll) AuthenticateAgent(*http.Request) (string, error) {
	return "", errors.New("no credentials")
}

// Anyone can send upgrades with bad credentials: 500 of them cost a few
// log lines, not 500 (the metrics count every one).
func TestEndpointLimitsRefusalLogs(t *testing.T) {
	var logs bytes.Buffer
	r, m, reg := newTestRegistry(t)
	ep, err := NewEndpoint(r, m, EndpointConfig{
		Auth: refuseAll{}, Tunnel: tunnel.DefaultConfig(), MaxHandshakes: 4,
		Log: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn}),
	})
	require.NoError(t, err)
	for range 500 {
		req := httptest.NewRequest(http.MethodGet, tunnel.Path, nil)
		rec := httptest.NewRecorder()
		ep.ServeHTTP(rec, req)
		require.Equal(t, http.StatusUnauthorized, rec.Code)
	}
	assert.LessOrEqual(t, strings.Count(logs.String(), "refused agent"), 25)
	assert.Equal(t, 500.0, hubtest.Counter(t, reg, "backhaul_hub_session_connects_total", map[string]string{"result": "unauthenticated"}))
}

// revokeAfterFirst authenticates an agent once; the cluster is gone by the
// second look.
type revokeAfterFirst struct{ calls atomic.Int32 }

func (a *revokeAfterFirst) AuthenticateAgent(*http.Request) (string, error) {
	if a.calls.Add(1) == 1 {
		return "edge", nil
	}
	return "", fmt.Errorf("%w: cluster edge was removed", ErrAgentForbidden)
}

// The attacker's race: authenticated just before its cluster is deleted,
// registered just after the revocation sweep. The endpoint checks again
// once the session is registered, and closes it.
func TestEndpointRevocationRaceClosesTheSession(t *testing.T) {
	auth := &revokeAfterFirst{}
	_, reg, url := newTestEndpoint(t, auth, 4)
	sess, err := dialAgent(url)
	require.NoError(t, err, "the upgrade itself was accepted")
	defer sess.Close()
	select {
	case <-sess.Done():
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the session of a cluster revoked while it connected stayed open")
	}
	_, err = reg.Get("edge")
	require.ErrorIs(t, err, ErrNotConnected)
	assert.EqualValues(t, 2, auth.calls.Load())
}
