package tunnel

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestSessionEcho(t *testing.T) {
	sizes := []struct {
		name string
		size int
	}{
		{name: "empty", size: 0},
		{name: "one byte", size: 1},
		{name: "one window", size: 256 << 10},
		{name: "8MiB", size: 8 << 20},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		// Either side may open streams: the hub opens towards the agent, and
		// the protocol does not care which end dialled.
		serve(t, server, echoHandler)
		serve(t, client, echoHandler)
		directions := []struct {
			name   string
			opener *Session
		}{
			{name: "client opens", opener: client},
			{name: "server opens", opener: server},
		}
		for _, dir := range directions {
			for _, sz := range sizes {
				t.Run(dir.name+"/"+sz.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), waitBound)
					defer cancel()
					conn, err := dir.opener.Open(ctx, Request{Kind: KindAPIServer, RequestID: "echo"})
					require.NoError(t, err)
					defer conn.Close()
					require.NoError(t, echo(conn, randomBytes(t, sz.size)))
				})
			}
		}
	})
}

// TestSessionConcurrentStreams checks streams do not mix their bytes.
func TestSessionConcurrentStreams(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		serve(t, server, echoHandler)
		const n = 16
		errs := make(chan error, n)
		for i := range n {
			go func() {
				conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer, RequestID: strconv.Itoa(i)})
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close()
				payload := make([]byte, 300<<10)
				for j := range payload {
					payload[j] = byte(i)
				}
				errs <- echo(conn, payload)
			}()
		}
		for range n {
			select {
			case err := <-errs:
				assert.NoError(t, err)
			case <-time.After(waitBound):
				t.Fatal("concurrent echoes did not finish")
			}
		}
	})
}

func TestSessionRequestReachesAcceptor(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want Request
	}{
		{
			name: "apiserver with timeout",
			req:  Request{Kind: KindAPIServer, RequestID: "abc", Timeout: 3 * time.Second},
			want: Request{Kind: KindAPIServer, RequestID: "abc", Timeout: 3 * time.Second},
		},
		{
			name: "tcp without timeout gets the default",
			req:  Request{Kind: KindTCP, Address: "db.example:5432"},
			want: Request{Kind: KindTCP, Address: "db.example:5432", Timeout: DefaultConfig().DefaultDialTimeout},
		},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		got := make(chan Request, 1)
		serve(t, server, func(_ context.Context, in *Incoming) {
			got <- in.Request
			_ = in.Reject(CodeNotAllowed, "recorded")
		})
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := client.Open(context.Background(), tc.req)
				var de *DialError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, tc.want, <-got)
			})
		}
	})
}

func TestSessionOpenInvalidRequest(t *testing.T) {
	client, _ := connectPipe(t, testConfig(t), nil)
	_, err := client.Open(context.Background(), Request{Kind: KindTCP, Address: "no-port"})
	require.ErrorIs(t, err, ErrMalformed)
	assert.Equal(t, 0, client.NumStreams(), "an invalid request must not open a stream")
}

func TestSessionReject(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		// The request id names the code to answer.
		serve(t, server, func(_ context.Context, in *Incoming) {
			n, err := strconv.Atoi(in.Request.RequestID)
			if err != nil {
				_ = in.Reject(CodeInternal, "bad test request id")
				return
			}
			_ = in.Reject(Code(n), "because "+Code(n).String())
		})
		for code := CodeRefused; code <= maxCode; code++ {
			t.Run(code.String(), func(t *testing.T) {
				conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer, RequestID: strconv.Itoa(int(code))})
				require.Error(t, err)
				assert.Nil(t, conn)
				var de *DialError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, code, de.Code)
				assert.Equal(t, "because "+code.String(), de.Message)
			})
		}
		assert.Eventually(t, func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 },
			waitBound, 10*time.Millisecond, "rejected streams are not released")
	})
}

func TestSessionGarbageHeader(t *testing.T) {
	valid, err := Request{Kind: KindAPIServer, RequestID: "abc"}.MarshalBinary()
	require.NoError(t, err)
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "bad version", in: rawRequest(99, KindAPIServer, 0, "", "")},
		{name: "unknown kind", in: rawRequest(Version, 42, 0, "", "")},
		{name: "over-long id", in: rawRequest(Version, KindAPIServer, 0, strings.Repeat("x", MaxRequestIDLen+1), "")},
		{name: "non-printable id", in: rawRequest(Version, KindAPIServer, 0, "\x1b[31m", "")},
		{name: "apiserver with address", in: rawRequest(Version, KindAPIServer, 0, "", "10.0.0.1:443")},
		{name: "bad address", in: rawRequest(Version, KindTCP, 0, "", "nonsense")},
		{name: "truncated then closed", in: valid[:len(valid)-1]},
		{name: "nothing then closed", in: nil},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		var handled atomic.Int32
		serve(t, server, func(_ context.Context, in *Incoming) {
			handled.Add(1)
			_ = in.Reject(CodeInternal, "handler must not see garbage")
		})
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				// Write raw bytes on a stream, bypassing Open's validation.
				stream, err := client.mux.OpenStream()
				require.NoError(t, err)
				defer stream.Close()
				require.NoError(t, stream.SetDeadline(time.Now().Add(waitBound)))
				_, err = stream.Write(tc.in)
				require.NoError(t, err)
				require.NoError(t, stream.Close()) // half-close: no more bytes are coming
				reply, err := ReadReply(stream)
				require.NoError(t, err)
				assert.Equal(t, CodeBadRequest, reply.Code)
				assert.NotEmpty(t, reply.Message)
			})
		}
		assert.Zero(t, handled.Load())
	})
}

// TestSessionSilentOpener: a stream that never sends its request is refused
// after HeaderTimeout instead of holding a goroutine forever.
func TestSessionSilentOpener(t *testing.T) {
	cfg := testConfig(t)
	cfg.HeaderTimeout = time.Second
	client, server := connectPipe(t, cfg, nil)
	serve(t, server, echoHandler)
	stream, err := client.mux.OpenStream()
	require.NoError(t, err)
	defer stream.Close()
	require.NoError(t, stream.SetReadDeadline(time.Now().Add(waitBound)))
	reply, err := ReadReply(stream)
	require.NoError(t, err)
	assert.Equal(t, CodeBadRequest, reply.Code)
}

func TestSessionOpenAfterClose(t *testing.T) {
	tests := []struct {
		name  string
		close func(client, server *Session)
	}{
		{name: "closed locally", close: func(client, _ *Session) { _ = client.Close() }},
		{name: "closed by the peer", close: func(_, server *Session) { _ = server.Close() }},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				client, server := tr.connect(t, testConfig(t), nil)
				tc.close(client, server)
				require.True(t, waitClosed(t, client.Done(), "client Done"))
				conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer})
				require.ErrorIs(t, err, ErrSessionClosed)
				assert.Nil(t, conn)
			})
		}
	})
}

func TestSessionOpenContext(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		cancel  bool // cancel once the acceptor holds the request
		wantErr error
	}{
		{
			name:    "cancelled while waiting for the reply",
			ctx:     func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancel:  true,
			wantErr: context.Canceled,
		},
		{
			name: "deadline while waiting for the reply",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			wantErr: context.DeadlineExceeded,
		},
		{
			name: "already cancelled",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantErr: context.Canceled,
		},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		cfg := testConfig(t)
		// Far beyond waitBound, so only ctx can end the wait.
		cfg.DefaultDialTimeout = time.Hour
		client, server := tr.connect(t, cfg, nil)
		holding := make(chan struct{}, 1)
		serve(t, server, func(ctx context.Context, in *Incoming) {
			select {
			case holding <- struct{}{}:
			default:
			}
			<-ctx.Done()
			_ = in.Reject(CodeUnavailable, "shutting down")
		})
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := tc.ctx()
				defer cancel()
				type result struct {
					conn net.Conn
					err  error
				}
				done := make(chan result, 1)
				go func() {
					c, err := client.Open(ctx, Request{Kind: KindAPIServer})
					done <- result{c, err}
				}()
				if tc.cancel {
					select {
					case <-holding:
					case <-time.After(waitBound):
						t.Fatal("the acceptor never got the request")
					}
					cancel()
				}
				select {
				case r := <-done:
					require.ErrorIs(t, r.err, tc.wantErr)
					assert.Nil(t, r.conn)
				case <-time.After(waitBound):
					t.Fatal("Open did not return after its context ended")
				}
				// Drain the hold signal of cases that did not wait for it.
				select {
				case <-holding:
				default:
				}
			})
		}
	})
}

// TestSessionStalledStream: a stream whose reader never reads holds back
// only itself; another stream on the same session still flows.
func TestSessionStalledStream(t *testing.T) {
	tests := []struct {
		name  string
		stall string // request id of the stream nobody reads
	}{
		{name: "acceptor never reads", stall: "acceptor-never-reads"},
		{name: "opener never reads", stall: "opener-never-reads"},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				cfg := testConfig(t)
				client, server := tr.connect(t, cfg, nil)
				flood := randomBytes(t, 4*int(cfg.StreamWindow))
				acceptorWrote := make(chan struct{})
				serve(t, server, func(ctx context.Context, in *Incoming) {
					switch in.Request.RequestID {
					case "acceptor-never-reads":
						c, err := in.Accept()
						if err != nil {
							return
						}
						defer c.Close()
						<-ctx.Done()
					case "opener-never-reads":
						c, err := in.Accept()
						if err != nil {
							return
						}
						defer c.Close()
						if _, err := c.Write(flood); err == nil {
							close(acceptorWrote)
						}
					default:
						echoHandler(ctx, in)
					}
				})

				stalled, err := client.Open(context.Background(), Request{Kind: KindAPIServer, RequestID: tc.stall})
				require.NoError(t, err)
				defer stalled.Close()
				writerDone := acceptorWrote
				if tc.stall == "acceptor-never-reads" {
					opener := make(chan struct{})
					writerDone = opener
					go func() {
						if _, err := stalled.Write(flood); err == nil {
							close(opener)
						}
					}()
				}

				echoed := make(chan error, 1)
				go func() {
					conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer, RequestID: "echo"})
					if err != nil {
						echoed <- err
						return
					}
					defer conn.Close()
					echoed <- echo(conn, flood[:64<<10])
				}()
				select {
				case err := <-echoed:
					require.NoError(t, err)
				case <-time.After(waitBound):
					t.Fatal("a stalled stream blocked another stream on the same session")
				}
				// Four windows cannot have gone through a stream nobody reads.
				select {
				case <-writerDone:
					t.Fatal("the stalled writer finished: flow control was not exercised")
				default:
				}
			})
		}
	})
}

func TestSessionCloseEndsServe(t *testing.T) {
	tests := []struct {
		name string
		end  func(client, server *Session, clientServe, serverServe *served)
		// closer is the side whose Serve must report ErrSessionClosed.
		wantClient, wantServer error
	}{
		{
			name:       "client closes",
			end:        func(client, _ *Session, _, _ *served) { _ = client.Close() },
			wantClient: ErrSessionClosed,
		},
		{
			name:       "server closes",
			end:        func(_, server *Session, _, _ *served) { _ = server.Close() },
			wantServer: ErrSessionClosed,
		},
		{
			name:       "server context ends",
			end:        func(_, _ *Session, _, serverServe *served) { serverServe.cancel() },
			wantServer: context.Canceled,
		},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				client, server := tr.connect(t, testConfig(t), nil)
				cs := serve(t, client, echoHandler)
				ss := serve(t, server, echoHandler)
				// Prove the session is up before ending it.
				_, err := client.Ping()
				require.NoError(t, err)

				tc.end(client, server, cs, ss)
				for _, side := range []struct {
					name string
					s    *Session
					sv   *served
					want error
				}{
					{"client", client, cs, tc.wantClient},
					{"server", server, ss, tc.wantServer},
				} {
					if !waitClosed(t, side.s.Done(), side.name+" Done") || !waitClosed(t, side.sv.done, side.name+" Serve") {
						continue
					}
					assert.Error(t, side.sv.err, side.name)
					if side.want != nil {
						assert.ErrorIs(t, side.sv.err, side.want, side.name)
					}
				}
			})
		}
	})
}

// TestSessionCloseLogsNoError: a session ending the ordinary ways is no
// error in either side's log. The side that closes sees its own conn fail
// under yamux (on a websocket, its pending read is cancelled); the other
// sees the conn end, with a close frame or, when the closer's TCP
// connection goes first, without one.
func TestSessionCloseLogsNoError(t *testing.T) {
	tests := []struct {
		name string
		// cut, when set, ends the connection between the two sides
		// instead of end.
		cut bool
		end func(client, server *Session, clientServe, serverServe *served)
	}{
		{name: "client closes", end: func(client, _ *Session, _, _ *served) { _ = client.Close() }},
		{name: "server closes", end: func(_, server *Session, _, _ *served) { _ = server.Close() }},
		{name: "client context ends", end: func(_, _ *Session, clientServe, _ *served) { clientServe.cancel() }},
		{name: "server context ends", end: func(_, _ *Session, _, serverServe *served) { serverServe.cancel() }},
		{name: "connection ends without a goodbye", cut: true},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				errs := &errorSink{}
				log := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: io.Discard})
				log.RegisterSink(errs)
				cfg := testConfig(t)
				cfg.Logger = log
				var proxy *stallProxy
				var via func(string) string
				if tc.cut {
					via = func(addr string) string { proxy = newStallProxy(t, addr); return proxy.Addr() }
				}
				client, server := tr.connect(t, cfg, via)
				cs := serve(t, client, echoHandler)
				ss := serve(t, server, echoHandler)
				_, err := client.Ping()
				require.NoError(t, err)

				if tc.cut {
					proxy.cut()
				} else {
					tc.end(client, server, cs, ss)
				}
				// Serve returns once its session's Close has returned,
				// which is after yamux's loops have logged their last.
				waitClosed(t, cs.done, "client Serve")
				waitClosed(t, ss.done, "server Serve")
				assert.Empty(t, errs.lines(), "logged at ERROR")
			})
		}
	})
}

// errorSink keeps what reaches a logger at ERROR or above.
type errorSink struct {
	mu  sync.Mutex
	got []string
}

func (s *errorSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < hclog.Error {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, fmt.Sprintf("%s: %s %v", name, msg, args))
}

func (s *errorSink) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// TestSessionServeWaitsForHandlersThatWatchContext: handlers are told to
// return when their context ends; when the peer goes away, Serve must end
// that context, not wait for handlers that are waiting for it.
func TestSessionServeWaitsForHandlersThatWatchContext(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		holding := make(chan struct{})
		sv := serve(t, server, func(ctx context.Context, in *Incoming) {
			close(holding)
			<-ctx.Done()
			_ = in.Reject(CodeUnavailable, "shutting down")
		})
		go func() { _, _ = client.Open(context.Background(), Request{Kind: KindAPIServer}) }()
		waitClosed(t, holding, "the handler to start")
		require.NoError(t, client.Close())
		if waitClosed(t, sv.done, "Serve to return after the peer closed") {
			// EOF or a reset, depending on the transport and timing.
			assert.Error(t, sv.err)
		}
	})
}

// TestSessionKeepAlive cuts the wire silently, without closing it, and
// expects both sides to notice through unanswered pings.
func TestSessionKeepAlive(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		cfg := testConfig(t)
		// Short, but with room for a loaded machine to answer healthy pings.
		cfg.KeepAliveInterval = 100 * time.Millisecond
		cfg.KeepAliveTimeout = 500 * time.Millisecond
		var proxy *stallProxy
		client, server := tr.connect(t, cfg, func(addr string) string {
			proxy = newStallProxy(t, addr)
			return proxy.Addr()
		})
		sv := serve(t, server, echoHandler)

		// Several keepalive rounds pass while the wire is healthy.
		conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer})
		require.NoError(t, err)
		require.NoError(t, echo(conn, []byte("hello")))
		_, err = client.Ping()
		require.NoError(t, err)

		proxy.stall()
		bound := cfg.KeepAliveInterval + cfg.KeepAliveTimeout + waitBound
		for _, side := range []struct {
			name string
			s    *Session
		}{{"client", client}, {"server", server}} {
			select {
			case <-side.s.Done():
			case <-time.After(bound):
				t.Errorf("%s did not notice the dead wire within %s", side.name, bound)
			}
		}
		if waitClosed(t, sv.done, "Serve to return") {
			assert.ErrorIs(t, sv.err, yamux.ErrKeepAliveTimeout, "the hub tells a dead wire from a closed session by it")
		}
	})
}

// TestIdleSessionGoroutines: an idle session costs each side yamux's
// read and write loops, and the accepting side its accept loop; the
// keepalive is a timer.
func TestIdleSessionGoroutines(t *testing.T) {
	const n = 20
	before := runtime.NumGoroutine()
	for range n {
		client, server := connectTCP(t, testConfig(t), nil)
		serve(t, server, echoHandler)
		_, err := client.Ping()
		require.NoError(t, err)
	}
	// The TCP test transport adds nothing per session once connected; its
	// set-up goroutines may still be on their way out, so wait for the
	// count to settle (polling here: assert.Eventually's condition runs in
	// a goroutine of its own, which would be counted).
	per := func() float64 { return float64(runtime.NumGoroutine()-before) / n }
	for deadline := time.Now().Add(waitBound); per() > 5.0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%.2f goroutines per idle session pair", per())
	assert.LessOrEqual(t, per(), 5.0, "goroutines per idle session, both sides together")
}

func TestSessionAccessors(t *testing.T) {
	client, server := connectTCP(t, testConfig(t), nil)
	serve(t, server, echoHandler)
	assert.Equal(t, "tcp", client.RemoteAddr().Network())
	rtt, err := client.Ping()
	require.NoError(t, err)
	assert.Positive(t, rtt)

	conn, err := client.Open(context.Background(), Request{Kind: KindAPIServer})
	require.NoError(t, err)
	assert.Equal(t, 1, client.NumStreams())
	require.NoError(t, echo(conn, []byte("x")))
	assert.Eventually(t, func() bool { return client.NumStreams() == 0 }, waitBound, 10*time.Millisecond)

	require.NoError(t, client.Close())
	require.NoError(t, client.Close(), "Close is idempotent")
}

func TestNewSessionRejectsBadConfig(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	cfg := testConfig(t)
	cfg.StreamWindow = 1
	_, err := NewSession(a, true, cfg)
	require.Error(t, err)
	// The conn is the caller's to close when the session never started.
	require.NoError(t, a.Close())
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{name: "default", mutate: func(*Config) {}, ok: true},
		{name: "minimum window", mutate: func(c *Config) { c.StreamWindow = 256 << 10 }, ok: true},
		{name: "window below yamux minimum", mutate: func(c *Config) { c.StreamWindow = 256<<10 - 1 }},
		{name: "no keepalive interval", mutate: func(c *Config) { c.KeepAliveInterval = 0 }},
		{name: "negative keepalive timeout", mutate: func(c *Config) { c.KeepAliveTimeout = -time.Second }},
		{name: "no backlog", mutate: func(c *Config) { c.AcceptBacklog = 0 }},
		{name: "no header timeout", mutate: func(c *Config) { c.HeaderTimeout = 0 }},
		{name: "no dial timeout", mutate: func(c *Config) { c.DefaultDialTimeout = 0 }},
		{name: "no logger", mutate: func(c *Config) { c.Logger = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(c)
			err := c.Validate()
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

// TestDefaultKeepAlive pins the documented detection time.
func TestDefaultKeepAlive(t *testing.T) {
	c := DefaultConfig()
	assert.Equal(t, 25*time.Second, c.KeepAliveInterval+c.KeepAliveTimeout)
}

// TestSessionDrain: the hub's Drain reaches the agent's handler with its
// grace and returns once acknowledged; an agent that does not know the kind
// refuses it with CodeBadRequest, which Drain reports as a *DialError.
func TestSessionDrain(t *testing.T) {
	tests := []struct {
		name      string
		grace     time.Duration
		wantGrace time.Duration
		// old is an agent that predates KindDrain: it refuses kinds it
		// does not know, as every agent always has.
		old bool
	}{
		{name: "acknowledged", grace: 45 * time.Second, wantGrace: 45 * time.Second},
		{name: "no grace gets the default", wantGrace: DefaultDrainGrace},
		{name: "old agent refuses", grace: time.Minute, wantGrace: time.Minute, old: true},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				agent, hub := tr.connect(t, testConfig(t), nil)
				got := make(chan Request, 1)
				serve(t, agent, func(_ context.Context, in *Incoming) {
					got <- in.Request
					if tc.old {
						_ = in.Reject(CodeBadRequest, "unknown stream kind")
						return
					}
					if c, err := in.Accept(); err == nil {
						_ = c.Close()
					}
				})
				ctx, cancel := context.WithTimeout(context.Background(), waitBound)
				defer cancel()
				err := hub.Drain(ctx, tc.grace)
				req := <-got
				assert.Equal(t, KindDrain, req.Kind)
				assert.Equal(t, tc.wantGrace, req.Timeout)
				assert.Empty(t, req.Address)
				if tc.old {
					var de *DialError
					require.ErrorAs(t, err, &de)
					assert.Equal(t, CodeBadRequest, de.Code)
				} else {
					require.NoError(t, err)
				}
				assert.Eventually(t, func() bool { return hub.NumStreams() == 0 && agent.NumStreams() == 0 },
					waitBound, 5*time.Millisecond, "the drain stream closes on both sides")
			})
		}
	})
	t.Run("negative grace is refused before anything is sent", func(t *testing.T) {
		_, hub := connectPipe(t, testConfig(t), nil)
		require.ErrorIs(t, hub.Drain(context.Background(), -time.Second), ErrMalformed)
		assert.Zero(t, hub.NumStreams())
	})
}
