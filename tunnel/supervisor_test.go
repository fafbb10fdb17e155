package tunnel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"backhaul.io/backhaul/pkg/testutil"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingSink keeps every log entry so tests can check levels and the
// error values logged, without matching text.
type recordingSink struct {
	mu      sync.Mutex
	entries []logEntry
}

type logEntry struct {
	level hclog.Level
	msg   string
	args  []any
}

func (s *recordingSink) Accept(_ string, level hclog.Level, msg string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, logEntry{level: level, msg: msg, args: args})
}

func (s *recordingSink) logger() hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Trace})
	l.RegisterSink(s)
	return l
}

// errorsAt returns the "error" values logged at level.
func (s *recordingSink) errorsAt(level hclog.Level) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []error
	for _, e := range s.entries {
		if e.level != level {
			continue
		}
		for i := 0; i+1 < len(e.args); i += 2 {
			if k, _ := e.args[i].(string); k == "error" {
				if err, ok := e.args[i+1].(error); ok {
					out = append(out, err)
				}
			}
		}
	}
	return out
}

// runSupervisor starts sup.Run and stops it at cleanup. wait returns Run's
// error, failing the test if Run does not return.
func runSupervisor(t *testing.T, sup *Supervisor) (cancel context.CancelFunc, wait func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = sup.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		waitClosed(t, done, "Supervisor.Run to return at cleanup")
	})
	return cancel, func() error {
		t.Helper()
		if !waitClosed(t, done, "Supervisor.Run to return") {
			t.FailNow()
		}
		return err
	}
}

func TestSupervisorRefusedUpgrade(t *testing.T) {
	const floor = time.Hour
	backoffMax := 100 * time.Millisecond
	tests := []struct {
		name      string
		status    int
		wantLevel hclog.Level
		checkWait func(t *testing.T, d time.Duration)
	}{
		{
			name: "401 waits at least the permanent floor", status: http.StatusUnauthorized, wantLevel: hclog.Error,
			checkWait: func(t *testing.T, d time.Duration) { assert.GreaterOrEqual(t, d, floor) },
		},
		{
			name: "426 waits at least the permanent floor", status: http.StatusUpgradeRequired, wantLevel: hclog.Error,
			checkWait: func(t *testing.T, d time.Duration) { assert.GreaterOrEqual(t, d, floor) },
		},
		{
			name: "503 backs off normally", status: http.StatusServiceUnavailable, wantLevel: hclog.Warn,
			checkWait: func(t *testing.T, d time.Duration) { assert.LessOrEqual(t, d, backoffMax) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int32
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				attempts.Add(1)
				http.Error(w, "invalid token for cluster alpha", tc.status)
			}))
			t.Cleanup(srv.Close)
			clock := testutil.NewFakeClock()
			sink := &recordingSink{}
			var disconnects atomic.Int32
			sup := &Supervisor{
				Dialer:         testDialer(t, srv, nil),
				Backoff:        &Backoff{Base: 10 * time.Millisecond, Max: backoffMax, ResetAfter: time.Minute, Clock: clock},
				PermanentFloor: floor,
				Handler:        echoHandler,
				Log:            sink.logger(),
				OnConnect:      func(*Session) { t.Error("connected to a hub that refuses") },
				OnDisconnect: func(err error) {
					var he *HandshakeError
					if assert.ErrorAs(t, err, &he) {
						assert.Equal(t, tc.status, he.StatusCode)
					}
					disconnects.Add(1)
				},
			}
			cancel, wait := runSupervisor(t, sup)

			const rounds = 3
			for i := 1; i <= rounds; i++ {
				w := clock.Next(t, waitBound)
				tc.checkWait(t, w.D)
				// Nothing dials while the supervisor waits.
				assert.EqualValues(t, i, attempts.Load(), "attempts before wait %d", i)
				if i < rounds {
					w.Fire <- clock.Now()
				}
			}
			cancel()
			require.ErrorIs(t, wait(), context.Canceled)
			assert.EqualValues(t, rounds, attempts.Load())
			assert.EqualValues(t, rounds, disconnects.Load())

			logged := sink.errorsAt(tc.wantLevel)
			require.Len(t, logged, rounds)
			for _, err := range logged {
				var he *HandshakeError
				require.ErrorAs(t, err, &he)
				assert.Equal(t, tc.status, he.StatusCode)
				assert.Contains(t, he.Reason, "invalid token for cluster alpha")
			}
		})
	}
}

func TestSupervisorReconnects(t *testing.T) {
	tests := []struct {
		name   string
		lasted time.Duration
		want   time.Duration
	}{
		{name: "after a stable connection the backoff starts over", lasted: 2 * time.Minute, want: time.Second},
		{name: "after a short connection the backoff goes on", lasted: time.Minute, want: 32 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			accepted := make(chan *Session, 4)
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if s, err := Accept(w, r, cfg); err == nil {
					accepted <- s
				}
			}))
			t.Cleanup(srv.Close)
			clock := testutil.NewFakeClock()
			b := &Backoff{Base: time.Second, Max: time.Minute, ResetAfter: 2 * time.Minute, Clock: clock, Jitter: ceilingJitter}
			b.attempt = 5 // as if five dials had failed before this one
			connected := make(chan *Session, 4)
			disconnected := make(chan error, 4)
			sup := &Supervisor{
				Dialer:       testDialer(t, srv, nil),
				Backoff:      b,
				Handler:      echoHandler,
				Log:          testLogger(t),
				OnConnect:    func(s *Session) { connected <- s },
				OnDisconnect: func(err error) { disconnected <- err },
			}
			cancel, wait := runSupervisor(t, sup)

			select {
			case <-connected:
			case <-time.After(waitBound):
				t.Fatal("supervisor never connected")
			}
			server := <-accepted
			t.Cleanup(func() { _ = server.Close() })

			// The hub opens a stream; the supervisor's handler serves it.
			conn, err := server.Open(context.Background(), Request{Kind: KindAPIServer})
			require.NoError(t, err)
			require.NoError(t, echo(conn, []byte("through the supervisor")))

			clock.Advance(tc.lasted)
			require.NoError(t, server.Close())
			select {
			case <-disconnected:
			case <-time.After(waitBound):
				t.Fatal("OnDisconnect was not called when the session ended")
			}
			w := clock.Next(t, waitBound)
			assert.Equal(t, tc.want, w.D)

			// Firing the wait dials again.
			w.Fire <- clock.Now()
			select {
			case <-connected:
			case <-time.After(waitBound):
				t.Fatal("supervisor did not reconnect")
			}
			again := <-accepted
			t.Cleanup(func() { _ = again.Close() })

			cancel()
			require.ErrorIs(t, wait(), context.Canceled)
			waitClosed(t, again.Done(), "the session to close when Run ends")
		})
	}
}

func TestSupervisorContextAlreadyDone(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	clock := testutil.NewFakeClock()
	sup := &Supervisor{Dialer: testDialer(t, srv, nil), Backoff: &Backoff{Base: time.Second, Max: time.Minute, Clock: clock}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := sup.Run(ctx)
	require.True(t, errors.Is(err, context.Canceled), "got %v", err)
	assert.Empty(t, clock.Waits(), "no wait after ctx ended")
}
