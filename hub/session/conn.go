package session

import (
	"net"
	"sync/atomic"
)

// countedConn counts payload bytes and open streams, and the bytes of
// the session it runs on when that is this replica's (s; nil for a stream
// forwarded to a peer, whose holder counts them).
type countedConn struct {
	net.Conn
	m      *Metrics
	s      *Session
	closed atomic.Bool
}

func (c *countedConn) Read(p []byte) (int, error) {
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
