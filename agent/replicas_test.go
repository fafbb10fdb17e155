package agent

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// hubAnswer is how the replicated hub meets one upgrade: accepted by
// replica, announcing replicas, or refused with status and Retry-After.
type hubAnswer struct {
	replica    string
	replicas   int
	status     int
	retryAfter string
}

// replicatedHub stands for hub replicas behind one load balancer: upgrade
// i is met by answer(i).
type replicatedHub struct {
	srv      *httptest.Server
	mu       sync.Mutex
	attempts int
	accepts  int // upgrades accepted, numbering them
	accepted chan replicaSession
	// pending holds sessions that finished their upgrade before an
	// earlier one did; only next touches it.
	pending map[int]replicaSession
	nextIdx int
}

// replicaSession is the hub's end of one agent session.
type replicaSession struct {
	idx     int
	replica string
	*tunnel.Session
}

func newReplicatedHub(t *testing.T, answer func(i int) hubAnswer) *replicatedHub {
	h := &replicatedHub{accepted: make(chan replicaSession, 16), pending: map[int]replicaSession{}}
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testLogger(t)
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		a := answer(h.attempts)
		h.attempts++
		idx := h.accepts
		if a.status == 0 {
			h.accepts++
		}
		h.mu.Unlock()
		if a.status != 0 {
			w.Header().Set("Retry-After", a.retryAfter)
			http.Error(w, "replica is draining", a.status)
			return
		}
		// Set before Accept, as the hub does.
		w.Header().Set(tunnel.HeaderHubReplica, a.replica)
		w.Header().Set(tunnel.HeaderHubReplicas, strconv.Itoa(a.replicas))
		s, err := tunnel.Accept(w, r, cfg)
		if err != nil {
			return
		}
		t.Cleanup(func() { _ = s.Close() })
		h.accepted <- replicaSession{idx: idx, replica: a.replica, Session: s}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// roundRobin is n replicas behind a round-robin balancer.
func roundRobin(n int) func(int) hubAnswer {
	return func(i int) hubAnswer { return hubAnswer{replica: "hub-" + strconv.Itoa(i%n), replicas: n} }
}

func (h *replicatedHub) attemptCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts
}

// next returns the hub's end of the next session accepted, in the order
// the upgrades arrived (two may finish out of order).
func (h *replicatedHub) next(t *testing.T) replicaSession {
	t.Helper()
	for {
		if s, ok := h.pending[h.nextIdx]; ok {
			delete(h.pending, h.nextIdx)
			h.nextIdx++
			return s
		}
		select {
		case s := <-h.accepted:
			h.pending[s.idx] = s
		case <-time.After(waitBound):
			t.Fatal("the hub accepted no session")
			return replicaSession{}
		}
	}
}

func (h *replicatedHub) dialer(t *testing.T) *tunnel.Dialer {
	return (&fakeHub{srv: h.srv}).dialer(t)
}

// startAgent runs an agent with connections sessions against hub, its
// backoff on clock; stop ends it and checks Run returned nil.
func startAgent(t *testing.T, hub *replicatedHub, clock *testutil.FakeClock, connections int) (a *Agent, stop func()) {
	a, err := New(Config{
		Dialer:         hub.dialer(t),
		Backoff:        &tunnel.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond, ResetAfter: time.Minute, Clock: clock},
		HubConnections: connections,
		Member:         newFakeMember(t).restConfig(),
		Log:            testLogger(t),
		Registry:       prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(waitBound):
				t.Error("agent Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// get is one request to the member's API server through s, on a stream of
// its own; the stream stays open (keep-alive) until conn is closed.
func get(t *testing.T, s *tunnel.Session) (conn net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	conn, err := s.Open(ctx, tunnel.Request{Kind: tunnel.KindAPIServer})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, "http://member/api", nil)
	require.NoError(t, err)
	req.Header.Set("Impersonate-User", "alice")
	require.NoError(t, req.Write(conn))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return conn
}

func readyz(a *Agent) int {
	rec := httptest.NewRecorder()
	a.adminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code
}

func TestAgentHubConnections(t *testing.T) {
	tests := []struct {
		name        string
		connections int
		replicas    int
		want        []string
	}{
		{name: "two sessions on distinct replicas of three", connections: 2, replicas: 3, want: []string{"hub-0", "hub-1"}},
		{name: "one replica keeps one session", connections: 2, replicas: 1, want: []string{"hub-0"}},
		{name: "one connection keeps today's single session", connections: 1, replicas: 3, want: []string{"hub-0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newReplicatedHub(t, roundRobin(tc.replicas))
			clock := testutil.NewFakeClock()
			a, stop := startAgent(t, hub, clock, tc.connections)

			var got []string
			for range tc.want {
				s := hub.next(t)
				got = append(got, s.replica)
				_ = get(t, s.Session).Close() // every session serves the hub's streams
			}
			assert.Equal(t, tc.want, got)
			require.Eventually(t, func() bool { return a.Sessions() == len(tc.want) }, waitBound, time.Millisecond)
			assert.Equal(t, http.StatusOK, readyz(a))
			assert.Equal(t, float64(len(tc.want)), promtest.ToFloat64(a.metrics.sessions))
			assert.Equal(t, float64(1), promtest.ToFloat64(a.metrics.connected))
			stop()
			assert.Equal(t, len(tc.want), hub.attemptCount(), "no dial beyond the sessions wanted")
		})
	}
}

// TestAgentDrain: a hub replica drains one of two sessions; the agent opens
// a replacement on another replica at once, keeps serving on the drained
// one, and closes it after its last stream finished.
func TestAgentDrain(t *testing.T) {
	hub := newReplicatedHub(t, roundRobin(3))
	clock := testutil.NewFakeClock()
	a, _ := startAgent(t, hub, clock, 2)
	drained, kept := hub.next(t), hub.next(t)
	require.Eventually(t, func() bool { return a.Sessions() == 2 }, waitBound, time.Millisecond)

	// A watch, say: a stream that stays open across the drain.
	open := get(t, drained.Session)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	require.NoError(t, drained.Drain(ctx, time.Minute))
	// Drain returns on the agent's acknowledgement, which comes first.
	assert.Eventually(t, func() bool { return promtest.ToFloat64(a.metrics.drains) == 1 }, waitBound, time.Millisecond)

	replacement := hub.next(t)
	assert.Equal(t, "hub-2", replacement.replica)
	_ = get(t, replacement.Session).Close()
	_ = get(t, drained.Session).Close() // still served while it drains
	require.Eventually(t, func() bool { return a.Sessions() == 3 }, waitBound, time.Millisecond)
	assert.Equal(t, http.StatusOK, readyz(a))

	// The open stream holds the drained session through a few polls.
	for range 3 {
		clock.Next(t, waitBound).Fire <- clock.Now()
	}
	select {
	case <-drained.Done():
		t.Fatal("the drained session closed while it still carried a stream")
	default:
	}
	require.NoError(t, open.Close())
	for closed := false; !closed; {
		select {
		case <-drained.Done():
			closed = true
		case w := <-clock.Waits():
			w.Fire <- clock.Now()
		case <-time.After(waitBound):
			t.Fatal("the drained session did not close after its last stream")
		}
	}
	require.Eventually(t, func() bool { return a.Sessions() == 2 }, waitBound, time.Millisecond)
	_ = get(t, kept.Session).Close()
	_ = get(t, replacement.Session).Close()
	assert.Equal(t, http.StatusOK, readyz(a))
	assert.Equal(t, float64(0), promtest.ToFloat64(a.metrics.reconnects), "a drain is not a lost session")
}

// TestAgentRetryAfter: a replica that refuses with 503 and Retry-After
// keeps the agent away for at least that long, plus some jitter.
func TestAgentRetryAfter(t *testing.T) {
	hub := newReplicatedHub(t, func(i int) hubAnswer {
		if i == 0 {
			return hubAnswer{status: http.StatusServiceUnavailable, retryAfter: "5"}
		}
		return hubAnswer{replica: "hub-1", replicas: 1}
	})
	clock := testutil.NewFakeClock()
	a, _ := startAgent(t, hub, clock, 2)

	w := clock.Next(t, waitBound)
	assert.GreaterOrEqual(t, w.D, 5*time.Second, "at least Retry-After, not the 10 ms backoff")
	assert.LessOrEqual(t, w.D, 7500*time.Millisecond, "at most half of it again")
	assert.Equal(t, 1, hub.attemptCount(), "nothing dials before the wait")
	assert.Equal(t, http.StatusServiceUnavailable, readyz(a))
	assert.Equal(t, float64(1), promtest.ToFloat64(a.metrics.reconnects))

	w.Fire <- clock.Now()
	s := hub.next(t)
	_ = get(t, s.Session).Close()
	require.Eventually(t, func() bool { return a.Sessions() == 1 }, waitBound, time.Millisecond)
	assert.Equal(t, http.StatusOK, readyz(a))
}
