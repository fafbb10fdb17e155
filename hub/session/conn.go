package session

import (
	"net"
	"sync/atomic"
)

// countedConn counts payload bytes and open streams.
type countedConn struct {
	net.Conn
	m      *Metrics
	closed atomic.Bool
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.m.bytesRx.Add(float64(n))
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.m.bytesTx.Add(float64(n))
	}
	return n, err
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.streamsActive.Dec()
	}
	return c.Conn.Close()
}
