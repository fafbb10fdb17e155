package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// Session is one agent↔hub tunnel. It mirrors net.Listener: Open a stream to
// the peer, Serve streams the peer opens, Close to end everything.
type Session struct {
	mux    *yamux.Session
	conn   net.Conn
	cfg    *Config
	log    hclog.Logger
	closed sync.Once
	// stopKeepalive stops the keepalive timer (keepalive.go);
	// keepaliveFailed says a ping went unanswered.
	stopKeepalive   func()
	keepaliveFailed atomic.Bool

	// replica and replicas are what the hub said on the upgrade; the
	// accepting side leaves them empty.
	replica  string
	replicas int
}

// newSession is the one place a websocket-backed net.Conn becomes a yamux
// session. client is true on the side that dialled (the agent).
func newSession(conn net.Conn, client bool, cfg *Config, batch *batchConn) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel config: %w", err)
	}
	var (
		mux *yamux.Session
		err error
	)
	fc := &frameConn{Conn: conn, batch: batch}
	ylog := newYamuxLog(cfg.Logger)
	if client {
		mux, err = yamux.Client(fc, cfg.yamux(ylog))
	} else {
		mux, err = yamux.Server(fc, cfg.yamux(ylog))
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start yamux: %w", err)
	}
	ylog.mux.Store(mux)
	s := &Session{mux: mux, conn: conn, cfg: cfg, log: cfg.Logger}
	s.startKeepalive()
	return s, nil
}

// NewSession runs a session over an already-established conn. The websocket
// front door uses it; tests use it over pipes and plain TCP.
func NewSession(conn net.Conn, client bool, cfg *Config) (*Session, error) {
	return newSession(conn, client, cfg, nil)
}

// Replica is the name of the hub replica that accepted this session, as the
// hub announced it in HeaderHubReplica; "" when it did not (or sent something
// unusable) and on the accepting side.
func (s *Session) Replica() string { return s.replica }

// Replicas is how many hub replicas served when this session was accepted,
// as announced in HeaderHubReplicas; 0 when unknown and on the accepting side.
func (s *Session) Replicas() int { return s.replicas }

// Done is closed when the session ends, for whatever reason.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Close ends the session and every stream on it.
func (s *Session) Close() error {
	var err error
	s.closed.Do(func() {
		s.stopKeepalive()
		err = s.mux.Close()
	})
	return err
}

// NumStreams is the number of open streams.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Ping measures one round trip through the tunnel. (yamux's own figure
// starts after the ping is written, which hides the network; time the call.)
func (s *Session) Ping() (time.Duration, error) {
	start := time.Now()
	if _, err := s.mux.Ping(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// RemoteAddr is the peer's address as seen by the transport.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Open asks the peer for req and returns the stream once the peer answered
// CodeOK. A refusal is a *DialError. ctx bounds the whole exchange.
func (s *Session) Open(ctx context.Context, req Request) (net.Conn, error) {
	// The reply may take as long as the dial the peer does for us.
	budget := req.Timeout
	if budget == 0 {
		budget = s.cfg.DefaultDialTimeout
	}
	return s.open(ctx, req, budget)
}

// Drain tells the peer (an agent) that this side (a hub replica) is going
// away, and returns once the agent acknowledged. The agent then dials a
// replacement session, elsewhere, and closes this one when it carries no
// streams or grace has passed (0: [DefaultDrainGrace]). An agent that does
// not know [KindDrain] refuses with a *DialError of CodeBadRequest; the
// session then simply ends when this side closes it.
func (s *Session) Drain(ctx context.Context, grace time.Duration) error {
	// The agent answers without dialling anything.
	stream, err := s.open(ctx, Request{Kind: KindDrain, Timeout: grace}, 0)
	if err != nil {
		return err
	}
	_ = stream.Close()
	return nil
}

// open is Open with budget, beyond HeaderTimeout, for the peer's reply.
func (s *Session) open(ctx context.Context, req Request, budget time.Duration) (net.Conn, error) {
	hdr, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	stream, err := s.openStream()
	if err != nil {
		return nil, err
	}
	// ctx's own deadline is left to the AfterFunc, so that ctx ending is
	// always reported as ctx's error, never as the peer being slow.
	_ = stream.SetDeadline(time.Now().Add(budget + s.cfg.HeaderTimeout))
	stop := context.AfterFunc(ctx, func() { _ = stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := stream.Write(hdr); err != nil {
		_ = stream.Close()
		return nil, s.openErr(ctx, "write stream request", err)
	}
	reply, err := ReadReply(stream)
	if err != nil {
		_ = stream.Close()
		return nil, s.openErr(ctx, "await stream reply", err)
	}
	if !stop() {
		_ = stream.Close()
		return nil, ctx.Err()
	}
	if reply.Code != CodeOK {
		_ = stream.Close()
		return nil, &DialError{Code: reply.Code, Message: reply.Message}
	}
	_ = stream.SetDeadline(time.Time{})
	return stream, nil
}

// openStream opens a yamux stream, without a request on it yet.
func (s *Session) openStream() (*yamux.Stream, error) {
	stream, err := s.mux.OpenStream()
	if err != nil {
		if errors.Is(err, yamux.ErrSessionShutdown) {
			return nil, fmt.Errorf("%w: %w", ErrSessionClosed, err)
		}
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return stream, nil
}

func (s *Session) openErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if s.mux.IsClosed() {
		return fmt.Errorf("%s: %w", what, ErrSessionClosed)
	}
	if errors.Is(err, yamux.ErrTimeout) || isTimeout(err) {
		return &DialError{Code: CodeTimeout, Message: "peer did not answer the stream request in time"}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Incoming is a stream the peer opened, with its request already read. The
// handler must call exactly one of Accept or Reject.
type Incoming struct {
	Request Request
	stream  net.Conn
}

// Accept answers CodeOK and hands over the stream for payload.
func (in *Incoming) Accept() (net.Conn, error) {
	b, _ := Reply{Code: CodeOK}.MarshalBinary()
	if _, err := in.stream.Write(b); err != nil {
		_ = in.stream.Close()
		return nil, fmt.Errorf("write stream reply: %w", err)
	}
	return in.stream, nil
}

// Reject answers code with a reason and closes the stream.
func (in *Incoming) Reject(code Code, msg string) error {
	b, err := Reply{Code: code, Message: msg}.MarshalBinary()
	if err == nil {
		_, err = in.stream.Write(b)
	}
	return errors.Join(err, in.stream.Close())
}

// Handler serves one incoming stream. It runs in its own goroutine and
// should return when ctx ends.
type Handler func(ctx context.Context, in *Incoming)

// Serve accepts streams the peer opens and runs h for each until ctx ends or
// the session closes; it then closes the session and waits for handlers.
func (s *Session) Serve(ctx context.Context, h Handler) error {
	// wg.Wait is deferred first so it runs last, after cancel: handlers are
	// told to return when ctx ends, so waiting for them first would hang.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	for {
		stream, err := s.mux.AcceptStream()
		if err != nil {
			_ = s.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
				return s.endErr(ErrSessionClosed)
			}
			return fmt.Errorf("accept stream: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, stream, h)
		}()
	}
}

func (s *Session) handle(ctx context.Context, stream *yamux.Stream, h Handler) {
	_ = stream.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	req, err := ReadRequest(stream)
	if err != nil {
		s.log.Debug("refusing malformed stream request", "error", err)
		b, _ := Reply{Code: CodeBadRequest, Message: err.Error()}.MarshalBinary()
		_ = stream.SetWriteDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		_, _ = stream.Write(b)
		_ = stream.Close()
		return
	}
	_ = stream.SetReadDeadline(time.Time{})
	if req.Timeout == 0 {
		req.Timeout = s.cfg.DefaultDialTimeout
		if req.Kind == KindDrain {
			req.Timeout = DefaultDrainGrace
		}
	}
	h(ctx, &Incoming{Request: req, stream: stream})
}
