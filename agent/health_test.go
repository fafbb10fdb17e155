package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

func TestHubRefusalReasons(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&tunnel.HandshakeError{StatusCode: http.StatusUnauthorized}, HubRefusalUnauthorized},
		{fmt.Errorf("dial: %w", &tunnel.HandshakeError{StatusCode: http.StatusForbidden}), HubRefusalForbidden},
		{&tunnel.HandshakeError{StatusCode: http.StatusUpgradeRequired}, HubRefusalVersion},
		{fmt.Errorf("%w: hub chose subprotocol %q", tunnel.ErrVersion, "x"), HubRefusalVersion},
		{&tunnel.HandshakeError{StatusCode: http.StatusTooManyRequests}, HubRefusalTooMany},
		{&tunnel.HandshakeError{StatusCode: http.StatusServiceUnavailable}, HubRefusalUnavailable},
		{&tunnel.HandshakeError{StatusCode: http.StatusBadRequest}, HubRefusalOther},
		{errors.New("dial tcp: connection refused"), ""},
		{tunnel.ErrSessionClosed, ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.err), func(t *testing.T) {
			got, ok := hubRefusal(tc.err)
			assert.Equal(t, tc.want != "", ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReconnectsTellFirstSessionsApart(t *testing.T) {
	type step struct {
		event string // connect, sessions N, drain
		n     int
		want  bool // for connect: a reconnect
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first session", []step{{"connect", 0, false}, {"sessions", 1, false}}},
		{"two sessions on two replicas", []step{{"connect", 0, false}, {"sessions", 1, false}, {"connect", 0, false}, {"sessions", 2, false}}},
		{"lost and back", []step{{"connect", 0, false}, {"sessions", 1, false}, {"sessions", 0, false}, {"connect", 0, true}, {"sessions", 1, false}}},
		{"one of two lost", []step{{"connect", 0, false}, {"sessions", 1, false}, {"connect", 0, false}, {"sessions", 2, false},
			{"sessions", 1, false}, {"connect", 0, true}, {"sessions", 2, false}}},
		{"drained: make before break", []step{{"connect", 0, false}, {"sessions", 1, false}, {"drain", 0, false},
			{"connect", 0, true}, {"sessions", 2, false}, {"sessions", 1, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &reconnects{}
			for i, s := range tc.steps {
				switch s.event {
				case "connect":
					assert.Equal(t, s.want, r.connected(), "step %d", i)
				case "sessions":
					r.sessions(s.n)
				case "drain":
					r.drained()
				}
			}
		})
	}
}

// TestAgentTunnelHealth: a refused upgrade is counted by reason, the
// round trip is measured in the background, and the session that
// replaces a lost one is a reconnect.
func TestAgentTunnelHealth(t *testing.T) {
	hub := newReplicatedHub(t, func(i int) hubAnswer {
		if i == 0 {
			return hubAnswer{status: http.StatusUnauthorized}
		}
		return hubAnswer{replica: "hub-0", replicas: 1}
	})
	clock := testutil.NewFakeClock()
	reg := prometheus.NewRegistry()
	a, err := New(Config{
		Dialer:      hub.dialer(t),
		Backoff:     &tunnel.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, ResetAfter: time.Minute, Clock: clock},
		Member:      newFakeMember(t).restConfig(),
		Log:         testLogger(t),
		Registry:    reg,
		RTTInterval: time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	clock.Next(t, waitBound).Fire <- clock.Now() // the wait after the 401
	first := hub.next(t)
	assert.Equal(t, float64(1), promtest.ToFloat64(a.metrics.hubRefusals.WithLabelValues(HubRefusalUnauthorized)))
	require.Eventually(t, func() bool { return histogramCount(t, reg, "backhaul_agent_tunnel_rtt_seconds") >= 2 },
		waitBound, time.Millisecond, "the agent pings its tunnel in the background")
	assert.Equal(t, float64(0), promtest.ToFloat64(a.metrics.reconnected), "a first session is no reconnect")

	require.NoError(t, first.Close())
	clock.Next(t, waitBound).Fire <- clock.Now() // the backoff after the loss
	_ = hub.next(t)
	require.Eventually(t, func() bool { return promtest.ToFloat64(a.metrics.reconnected) == 1 }, waitBound, time.Millisecond)
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}
