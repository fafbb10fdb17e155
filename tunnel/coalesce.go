package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux's frame header: version(1) type(1) flags(2) stream(4) length(4).
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
	// coalesceMax bounds the frames joined into one write; larger bodies
	// go out after their header on their own, where one extra small
	// message costs nothing next to the body.
	coalesceMax = 64 << 10
)

var coalescePool = sync.Pool{New: func() any { b := make([]byte, 0, coalesceMax); return &b }}

// frameConn joins each yamux data-frame header with the body that follows
// it. yamux v0.1.2 writes the two with separate Write calls, and on a
// websocket every Write is a message, a TLS record and a syscall (and, on
// the agent, a masking pass): joining them halves the per-frame cost of
// small requests. yamux writes from one goroutine (its send loop), so no
// lock is needed.
type frameConn struct {
	net.Conn
	hdr  [yamuxHeaderLen]byte
	held bool
	// batch, on the agent, gathers the websocket library's small writes of
	// one message; each Write here is whole messages, so it ends the batch.
	batch *batchConn
}

func (c *frameConn) Write(p []byte) (n int, err error) {
	if c.batch != nil {
		c.batch.hold()
		defer func() {
			if ferr := c.batch.release(); err == nil && ferr != nil {
				err = ferr
			}
		}()
	}
	if c.held {
		c.held = false
		if len(p) <= coalesceMax-yamuxHeaderLen {
			bp := coalescePool.Get().(*[]byte)
			buf := append(append((*bp)[:0], c.hdr[:]...), p...)
			n, err := c.Conn.Write(buf)
			*bp = buf
			coalescePool.Put(bp)
			return max(n-yamuxHeaderLen, 0), err
		}
		if _, err := c.Conn.Write(c.hdr[:]); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}
