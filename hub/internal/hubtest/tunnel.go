package hubtest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// PipeSessions is a hub and an agent session over a net.Pipe, closed at
// the end of the test.
func PipeSessions(t *testing.T) (hubSide, agentSide *tunnel.Session) {
	t.Helper()
	a, b := net.Pipe()
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	hubSide, err := tunnel.NewSession(a, false, cfg)
	require.NoError(t, err)
	agentSide, err = tunnel.NewSession(b, true, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = hubSide.Close(); _ = agentSide.Close() })
	return hubSide, agentSide
}

// ServeAgent serves agentSide's streams with h until the test ends.
func ServeAgent(t *testing.T, agentSide *tunnel.Session, h tunnel.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agentSide.Serve(ctx, h)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// Rejecting answers every stream with code.
func Rejecting(code tunnel.Code) tunnel.Handler {
	return func(_ context.Context, in *tunnel.Incoming) { _ = in.Reject(code, "agent says "+code.String()) }
}

// HTTPAgent serves every stream as HTTP with h, as an agent serves its API
// server's.
func HTTPAgent(t *testing.T, h http.Handler) tunnel.Handler {
	l := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return func(ctx context.Context, in *tunnel.Incoming) {
		c, err := in.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- c:
		case <-ctx.Done():
			_ = c.Close()
		case <-l.done:
			_ = c.Close()
		}
	}
}

// chanListener feeds accepted tunnel streams to an http.Server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
