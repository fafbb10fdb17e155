package tunnel

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"backhaul.io/backhaul/pkg/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answer is how a replicaHub meets one upgrade: accepted as replica (with
// replicas announced, when not ""), or refused with status and retryAfter.
type answer struct {
	replica    string
	replicas   string
	status     int
	retryAfter string
}

// replicaHub stands for several hub replicas behind one load balancer: each
// upgrade is met by the next answer of a script.
type replicaHub struct {
	srv      *httptest.Server
	mu       sync.Mutex
	attempts int
	accepts  int // upgrades the script accepted, numbering them
	accepted chan hubSession
	// pending holds sessions that finished their upgrade before an
	// earlier one did; only next touches it.
	pending map[int]hubSession
	nextIdx int
}

type hubSession struct {
	idx     int
	replica string
	*Session
}

func newReplicaHub(t *testing.T, script func(attempt int) answer) *replicaHub {
	h := &replicaHub{accepted: make(chan hubSession, 32), pending: map[int]hubSession{}}
	cfg := testConfig(t)
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		a := script(h.attempts)
		h.attempts++
		idx := h.accepts
		if a.status == 0 {
			h.accepts++
		}
		h.mu.Unlock()
		if a.status != 0 {
			if a.retryAfter != "" {
				w.Header().Set("Retry-After", a.retryAfter)
			}
			http.Error(w, "replica is draining", a.status)
			return
		}
		if a.replica != "" {
			w.Header().Set(HeaderHubReplica, a.replica)
		}
		if a.replicas != "" {
			w.Header().Set(HeaderHubReplicas, a.replicas)
		}
		s, err := Accept(w, r, cfg)
		if err != nil {
			return
		}
		t.Cleanup(func() { _ = s.Close() })
		h.accepted <- hubSession{idx: idx, replica: a.replica, Session: s}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *replicaHub) attemptCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts
}

// next returns the hub's end of the next session accepted, in the order
// the upgrades arrived (two may finish out of order).
func (h *replicaHub) next(t *testing.T) hubSession {
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
			t.Fatal("no session was accepted")
			return hubSession{}
		}
	}
}

// roundRobin answers as n replicas behind a round-robin balancer.
func roundRobin(n int) func(int) answer {
	return func(i int) answer {
		return answer{replica: "hub-" + strconv.Itoa(i%n), replicas: strconv.Itoa(n)}
	}
}

// sessionCounts collects what OnSessions reports.
type sessionCounts chan int

func (c sessionCounts) record(n int) { c <- n }

// until waits for the count to become n.
func (c sessionCounts) until(t *testing.T, n int) {
	t.Helper()
	for {
		select {
		case got := <-c:
			if got == n {
				return
			}
		case <-time.After(waitBound):
			t.Fatalf("never reached %d sessions", n)
		}
	}
}

func poolSupervisor(t *testing.T, hub *replicaHub, clock *testutil.FakeClock, connections int) (*Supervisor, sessionCounts) {
	counts := make(sessionCounts, 64)
	return &Supervisor{
		Dialer:          testDialer(t, hub.srv, nil),
		Backoff:         &Backoff{Base: 10 * time.Second, Max: time.Minute, ResetAfter: 2 * time.Minute, Clock: clock, Jitter: ceilingJitter},
		Connections:     connections,
		DuplicateWait:   2 * time.Second,
		DrainPoll:       time.Second,
		RefreshReplicas: 5 * time.Minute,
		Handler:         echoHandler,
		Log:             testLogger(t),
		OnSessions:      counts.record,
	}, counts
}

// assertServed checks the agent serves streams the hub opens on s.
func assertServed(t *testing.T, s *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	conn, err := s.Open(ctx, Request{Kind: KindAPIServer})
	require.NoError(t, err)
	require.NoError(t, echo(conn, []byte("served")))
}

func TestSupervisorSessionsOnDistinctReplicas(t *testing.T) {
	tests := []struct {
		name        string
		connections int
		script      func(int) answer
		want        []string // replicas of the sessions kept, in order
		// wantRefresh: the supervisor holds fewer sessions than it would
		// like, and asks to be woken to look for more replicas.
		wantRefresh bool
	}{
		{name: "two of three replicas", connections: 2, script: roundRobin(3), want: []string{"hub-0", "hub-1"}},
		{name: "one replica", connections: 2, script: roundRobin(1), want: []string{"hub-0"}, wantRefresh: true},
		{name: "a hub that names no replica is one", connections: 2, script: func(int) answer { return answer{replicas: "3"} }, want: []string{""}},
		{name: "a name without a count is one replica", connections: 2, script: func(int) answer { return answer{replica: "hub-0"} }, want: []string{"hub-0"}, wantRefresh: true},
		{name: "one connection", connections: 1, script: roundRobin(3), want: []string{"hub-0"}},
		{name: "zero connections means one", connections: 0, script: roundRobin(3), want: []string{"hub-0"}},
		{name: "more connections than replicas", connections: 5, script: roundRobin(3), want: []string{"hub-0", "hub-1", "hub-2"}, wantRefresh: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newReplicaHub(t, tc.script)
			clock := testutil.NewFakeClock()
			sup, counts := poolSupervisor(t, hub, clock, tc.connections)
			cancel, wait := runSupervisor(t, sup)

			var got []string
			for range tc.want {
				s := hub.next(t)
				got = append(got, s.replica)
				assertServed(t, s.Session)
			}
			assert.Equal(t, tc.want, got)
			counts.until(t, len(tc.want))
			if tc.wantRefresh {
				w := clock.Next(t, waitBound)
				assert.Equal(t, sup.RefreshReplicas, w.D)
			}
			cancel()
			require.ErrorIs(t, wait(), context.Canceled)
			assert.Equal(t, len(tc.want), hub.attemptCount(), "no dial beyond the sessions wanted")
			assert.Empty(t, clock.Waits(), "no wait beyond the refresh")
		})
	}
}

// TestSupervisorRefreshReplicas: an agent that keeps one session because
// the hub said it has one replica looks again later, and takes a second
// session once the hub has grown.
func TestSupervisorRefreshReplicas(t *testing.T) {
	hub := newReplicaHub(t, func(i int) answer {
		switch i {
		case 0, 1:
			return answer{replica: "hub-0", replicas: "1"}
		case 2:
			return answer{replica: "hub-0", replicas: "2"} // grown, but the balancer picked the same one
		default:
			return answer{replica: "hub-1", replicas: "2"}
		}
	})
	clock := testutil.NewFakeClock()
	sup, counts := poolSupervisor(t, hub, clock, 2)
	runSupervisor(t, sup)

	first := hub.next(t)
	counts.until(t, 1)

	// Still one replica: the probe's session is closed and nothing else
	// happens until the next refresh.
	w := clock.Next(t, waitBound)
	require.Equal(t, sup.RefreshReplicas, w.D)
	w.Fire <- clock.Now()
	probe := hub.next(t)
	waitClosed(t, probe.Done(), "the probe's session on a replica already held to close")
	w = clock.Next(t, waitBound)
	require.Equal(t, sup.RefreshReplicas, w.D)

	// Two replicas now: the probe lands on the known one again, so the
	// supervisor tries once more shortly and keeps what it finds.
	w.Fire <- clock.Now()
	probe = hub.next(t)
	waitClosed(t, probe.Done(), "the second probe's session to close")
	w = clock.Next(t, waitBound)
	require.Equal(t, sup.DuplicateWait, w.D)
	w.Fire <- clock.Now()
	second := hub.next(t)
	assert.Equal(t, "hub-1", second.replica)
	counts.until(t, 2)
	assertServed(t, first.Session)
	assertServed(t, second.Session)
}

func TestSupervisorDuplicateReplicas(t *testing.T) {
	// The balancer keeps picking hub-0 before it picks hub-1.
	const sameBeforeOther = maxDuplicates + 2
	hub := newReplicaHub(t, func(i int) answer {
		if i <= sameBeforeOther {
			return answer{replica: "hub-0", replicas: "2"}
		}
		return answer{replica: "hub-1", replicas: "2"}
	})
	clock := testutil.NewFakeClock()
	sup, counts := poolSupervisor(t, hub, clock, 2)
	runSupervisor(t, sup)

	first := hub.next(t)
	counts.until(t, 1)
	for i := 1; i <= sameBeforeOther; i++ {
		dup := hub.next(t)
		assert.Equal(t, "hub-0", dup.replica)
		waitClosed(t, dup.Done(), "the duplicate session to close")
		w := clock.Next(t, waitBound)
		if i <= maxDuplicates {
			assert.Equal(t, sup.DuplicateWait, w.D, "duplicate %d: a short wait", i)
		} else {
			// The normal backoff: Base, then doubling (ceilingJitter).
			want := sup.Backoff.Base << (i - maxDuplicates - 1)
			assert.Equal(t, want, w.D, "duplicate %d: the normal backoff", i)
		}
		assert.Equal(t, i+1, hub.attemptCount(), "nothing dials while the supervisor waits")
		w.Fire <- clock.Now()
	}
	second := hub.next(t)
	assert.Equal(t, "hub-1", second.replica)
	counts.until(t, 2)
	assertServed(t, first.Session)
	assertServed(t, second.Session)
}

// TestSupervisorDuplicateWaitIsRandom: with the default jitter, the short
// waits after duplicates spread over [DuplicateWait/4, DuplicateWait].
func TestSupervisorDuplicateWaitIsRandom(t *testing.T) {
	r := (&Supervisor{Backoff: &Backoff{Base: time.Hour, Max: time.Hour}}).newRun()
	seen := map[time.Duration]bool{}
	for range 100 {
		r.duplicates = 1
		w := r.duplicateWait()
		assert.GreaterOrEqual(t, w, 500*time.Millisecond)
		assert.LessOrEqual(t, w, 2*time.Second)
		seen[w] = true
	}
	assert.Greater(t, len(seen), 1)
}

func TestSupervisorRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		jitter func(int64) int64
		check  func(t *testing.T, d time.Duration)
	}{
		{
			name: "at least retry-after, plus up to half", jitter: nil,
			check: func(t *testing.T, d time.Duration) {
				assert.GreaterOrEqual(t, d, 5*time.Second)
				assert.LessOrEqual(t, d, 7500*time.Millisecond)
			},
		},
		{
			name: "the whole half at most", jitter: ceilingJitter,
			check: func(t *testing.T, d time.Duration) { assert.Equal(t, 7500*time.Millisecond, d) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newReplicaHub(t, func(i int) answer {
				if i == 0 {
					return answer{status: http.StatusServiceUnavailable, retryAfter: "5"}
				}
				return answer{replica: "hub-1", replicas: "1"}
			})
			clock := testutil.NewFakeClock()
			sup, counts := poolSupervisor(t, hub, clock, 1)
			sup.Backoff.Base = time.Second // shorter than Retry-After
			sup.Backoff.Jitter = tc.jitter
			var refused []error
			var mu sync.Mutex
			sup.OnDisconnect = func(err error) {
				mu.Lock()
				refused = append(refused, err)
				mu.Unlock()
			}
			runSupervisor(t, sup)

			w := clock.Next(t, waitBound)
			tc.check(t, w.D)
			assert.Equal(t, 1, hub.attemptCount(), "nothing dials before the wait")
			mu.Lock()
			require.Len(t, refused, 1)
			var he *HandshakeError
			require.ErrorAs(t, refused[0], &he)
			assert.Equal(t, 5*time.Second, he.RetryAfter)
			assert.False(t, IsPermanent(he), "a 503 is not permanent")
			mu.Unlock()
			w.Fire <- clock.Now()
			assert.Equal(t, "hub-1", hub.next(t).replica)
			counts.until(t, 1)
		})
	}
}

// TestSupervisorDrain: a drained session stops counting, a replacement is
// dialled at once, and the drained one closes after its last stream ends;
// it still serves what it carries meanwhile.
func TestSupervisorDrain(t *testing.T) {
	hub := newReplicaHub(t, roundRobin(3))
	clock := testutil.NewFakeClock()
	sup, counts := poolSupervisor(t, hub, clock, 2)
	drains := make(chan time.Duration, 4)
	sup.OnDrain = func(_ *Session, grace time.Duration) { drains <- grace }
	runSupervisor(t, sup)

	draining, kept := hub.next(t), hub.next(t)
	counts.until(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	open, err := draining.Open(ctx, Request{Kind: KindAPIServer})
	require.NoError(t, err)

	require.NoError(t, draining.Drain(ctx, time.Minute))
	select {
	case g := <-drains:
		assert.Equal(t, time.Minute, g)
	case <-time.After(waitBound):
		t.Fatal("OnDrain was not called")
	}
	// No wait: the replacement is dialled at once, on another replica.
	replacement := hub.next(t)
	assert.Equal(t, "hub-2", replacement.replica)
	counts.until(t, 3)
	assertServed(t, replacement.Session)
	assertServed(t, kept.Session)
	assertServed(t, draining.Session) // still serving while it drains

	// The open stream holds it: polls come and go.
	for range 3 {
		w := clock.Next(t, waitBound)
		require.Equal(t, sup.DrainPoll, w.D)
		w.Fire <- clock.Now()
	}
	select {
	case <-draining.Done():
		t.Fatal("the drained session closed while it still carried a stream")
	default:
	}
	// The last stream ends; the next poll closes it.
	require.NoError(t, echo(open, []byte("last words")))
	for closed := false; !closed; {
		select {
		case <-draining.Done():
			closed = true
		case w := <-clock.Waits():
			require.Equal(t, sup.DrainPoll, w.D)
			w.Fire <- clock.Now()
		case <-time.After(waitBound):
			t.Fatal("the drained session did not close after its last stream ended")
		}
	}
	counts.until(t, 2)
	assertServed(t, kept.Session)
	assertServed(t, replacement.Session)
	assert.Equal(t, 3, hub.attemptCount())
}

// TestSupervisorDrainMakeBeforeBreak: the only session is not closed for a
// drain before a replacement is up, unless the grace runs out.
func TestSupervisorDrainMakeBeforeBreak(t *testing.T) {
	const grace = time.Minute
	tests := []struct {
		name string
		// graceRunsOut: the replacement never comes; else it comes once the
		// draining replica's Retry-After has passed.
		graceRunsOut bool
	}{
		{name: "closed once the replacement is up"},
		{name: "closed when the grace runs out", graceRunsOut: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := newReplicaHub(t, func(i int) answer {
				switch i {
				case 0:
					return answer{replica: "hub-0", replicas: "2"}
				case 1:
					// The balancer picks the draining replica, which refuses.
					return answer{status: http.StatusServiceUnavailable, retryAfter: "5"}
				default:
					return answer{replica: "hub-1", replicas: "2"}
				}
			})
			clock := testutil.NewFakeClock()
			sup, counts := poolSupervisor(t, hub, clock, 1)
			agentSide := make(chan *Session, 4)
			sup.OnConnect = func(s *Session) { agentSide <- s }
			runSupervisor(t, sup)
			only := hub.next(t)
			counts.until(t, 1)
			onlyAgent := <-agentSide

			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			require.NoError(t, only.Drain(ctx, grace))

			// The refused replacement's wait and the drain poll, in any order.
			var retry, poll testutil.FakeWait
			for range 2 {
				switch w := clock.Next(t, waitBound); w.D {
				case sup.DrainPoll:
					poll = w
				default:
					retry = w
				}
			}
			require.NotNil(t, poll.Fire)
			require.NotNil(t, retry.Fire)
			assert.GreaterOrEqual(t, retry.D, 5*time.Second)

			// Idle, but alone: polls leave it open.
			require.Eventually(t, func() bool { return onlyAgent.NumStreams() == 0 }, waitBound, time.Millisecond)
			poll.Fire <- clock.Now()
			poll = clock.Next(t, waitBound)
			require.Equal(t, sup.DrainPoll, poll.D)
			select {
			case <-only.Done():
				t.Fatal("the only session closed before its replacement was up")
			default:
			}

			if tc.graceRunsOut {
				clock.Advance(grace)
				poll.Fire <- clock.Now()
				waitClosed(t, only.Done(), "the drained session to close when its grace ran out")
				counts.until(t, 0)
				return
			}
			retry.Fire <- clock.Now()
			replacement := hub.next(t)
			assert.Equal(t, "hub-1", replacement.replica)
			// Closed as soon as the replacement is up, without a poll.
			waitClosed(t, only.Done(), "the drained session to close once replaced")
			counts.until(t, 1)
			assertServed(t, replacement.Session)
		})
	}
}

// TestSupervisorDrainReplacementOnSameReplica: a hub ends a session whose
// certificate expires by draining it while the replica itself stays (and
// takes upgrades). The replacement lands on the same replica; it is kept,
// not closed as a duplicate, and the drained session closes once idle.
func TestSupervisorDrainReplacementOnSameReplica(t *testing.T) {
	hub := newReplicaHub(t, func(int) answer { return answer{replica: "hub-0", replicas: "1"} })
	clock := testutil.NewFakeClock()
	sup, counts := poolSupervisor(t, hub, clock, 1)
	runSupervisor(t, sup)
	old := hub.next(t)
	counts.until(t, 1)

	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	require.NoError(t, old.Drain(ctx, time.Minute))
	replacement := hub.next(t)
	assert.Equal(t, "hub-0", replacement.replica)
	waitClosed(t, old.Done(), "the drained session to close once replaced")
	counts.until(t, 1)
	assertServed(t, replacement.Session)
	select {
	case <-replacement.Done():
		t.Fatal("the replacement on the same replica was closed as a duplicate")
	default:
	}
	assert.Equal(t, 2, hub.attemptCount())
}
