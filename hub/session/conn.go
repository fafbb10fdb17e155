package session

import (
	"net"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// countedConn counts payload bytes and open streams, and the bytes of
// the session it runs on when that is this replica's (s; nil for a stream
// forwarded to a peer, whose holder counts them).
type countedConn struct {
	net.Conn
	m      *Metrics
	s      *Session
	closed atomic.Bool
	// early is a stream opened without waiting for the agent's reply,
	// until its first Read reads it: then its set-up time is known.
	early atomic.Pointer[pendingOpen]
}

// counted wraps a stream of kind opened at start on s (nil: through a
// peer), and counts it opened; its set-up time is observed now, or for a
// stream opened early once the reply is in.
func (m *Metrics) counted(c net.Conn, s *Session, kind tunnel.Kind, start time.Time) *countedConn {
	m.streamOpening()
	cc := &countedConn{Conn: c, m: m, s: s}
	if early, ok := c.(*tunnel.EarlyConn); ok {
		cc.early.Store(&pendingOpen{conn: early, kind: kind.String(), start: start})
	} else {
		m.streamSetUp(kind.String(), time.Since(start).Seconds())
	}
	return cc
}

type pendingOpen struct {
	conn  *tunnel.EarlyConn
	kind  string
	start time.Time
}

// AwaitReply waits for the agent's reply to a stream opened early, and
// returns its refusal, if any; for other streams it returns nil at once.
func (c *countedConn) AwaitReply() error {
	if o := c.early.Swap(nil); o != nil {
		err := o.conn.AwaitReply()
		if err == nil {
			c.m.streamSetUp(o.kind, time.Since(o.start).Seconds())
		}
		return err
	}
	if e, ok := c.Conn.(*tunnel.EarlyConn); ok {
		return e.AwaitReply()
	}
	return nil
}

func (c *countedConn) Read(p []byte) (int, error) {
	if err := c.AwaitReply(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.m.bytesRx.Add(float64(n))
		if c.s != nil {
			c.s.bytesRx.Add(int64(n))
		}
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.m.bytesTx.Add(float64(n))
		if c.s != nil {
			c.s.bytesTx.Add(int64(n))
		}
	}
	return n, err
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.streamsActive.Dec()
	}
	return c.Conn.Close()
}
