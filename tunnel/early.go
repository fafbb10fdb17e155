package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// OpenEarly is Open without waiting for the peer's reply: it returns once
// the request is written, so the caller's first bytes follow it on the
// wire instead of a round trip later. The reply is read by the stream's
// first Read. A refusal surfaces there, and in every later Read and Write,
// as the *DialError Open would have returned, and the stream is closed;
// what the caller wrote before it is discarded by the peer, which never
// reads past a request it refuses. ctx bounds writing the request; the
// reply must come within the dial budget, as with Open.
//
// Use it where a failed open costs only the bytes already sent: like TLS
// early data (RFC 8470), a caller must not resend a request that is not
// safe to repeat when the stream fails before the reply.
func (s *Session) OpenEarly(ctx context.Context, req Request) (*EarlyConn, error) {
	hdr, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	budget := req.Timeout
	if budget == 0 {
		budget = s.cfg.DefaultDialTimeout
	}
	stream, err := s.openStream()
	if err != nil {
		return nil, err
	}
	_ = stream.SetWriteDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	stop := context.AfterFunc(ctx, func() { _ = stream.SetWriteDeadline(time.Unix(1, 0)) })
	_, err = stream.Write(hdr)
	if !stop() {
		_ = stream.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		_ = stream.Close()
		return nil, s.openErr(ctx, "write stream request", err)
	}
	_ = stream.SetWriteDeadline(time.Time{})
	return &EarlyConn{Conn: stream, s: s, replyBy: time.Now().Add(budget + s.cfg.HeaderTimeout)}, nil
}

// EarlyConn is a stream opened by OpenEarly.
type EarlyConn struct {
	net.Conn
	s       *Session
	replyBy time.Time // when the reply must have come

	// rmu serialises reading the reply; replied and refused are set under
	// both rmu and dmu, once.
	rmu     sync.Mutex
	replied bool
	refused error

	// dmu guards the caller's read deadline, which applies only once the
	// reply is in (before that, the earlier of it and replyBy does).
	dmu          sync.Mutex
	readDeadline time.Time
}

func (c *EarlyConn) Read(p []byte) (int, error) {
	if err := c.AwaitReply(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Write sends p; when the stream breaks, it returns the refusal or the
// session's end that broke it.
func (c *EarlyConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil || isTimeout(err) {
		return n, err
	}
	// The stream broke: the reply, or the session's end, says why, and
	// comes at once now (a write error reaches the writer before the
	// session has marked itself closed).
	if refused := c.AwaitReply(); refused != nil {
		return n, refused
	}
	return n, err
}

func (c *EarlyConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *EarlyConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDeadline = t
	if c.replied {
		return c.Conn.SetReadDeadline(t)
	}
	return c.Conn.SetReadDeadline(earlier(t, c.replyBy))
}

// AwaitReply waits for the peer's reply, reading it the first time it is
// called, and returns the refusal, if any, every time; Read calls it.
func (c *EarlyConn) AwaitReply() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.dmu.Lock()
	if c.replied {
		err := c.refused
		c.dmu.Unlock()
		return err
	}
	callers := !c.readDeadline.IsZero() && c.readDeadline.Before(c.replyBy)
	_ = c.Conn.SetReadDeadline(earlier(c.readDeadline, c.replyBy))
	c.dmu.Unlock()

	reply, err := ReadReply(c.Conn)
	switch {
	case err != nil && callers && isTimeout(err):
		// The caller's own deadline, not the peer being slow.
		err = fmt.Errorf("await stream reply: %w", err)
	case err != nil:
		err = c.s.openErr(context.Background(), "await stream reply", err)
	case reply.Code != CodeOK:
		err = &DialError{Code: reply.Code, Message: reply.Message}
	}

	c.dmu.Lock()
	c.replied, c.refused = true, err
	_ = c.Conn.SetReadDeadline(c.readDeadline)
	c.dmu.Unlock()
	if err != nil {
		_ = c.Conn.Close()
	}
	return err
}

// earlier is the earlier of a and b, where zero is never.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
