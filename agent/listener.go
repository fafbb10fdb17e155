package agent

import (
	"context"
	"net"
	"sync"
)

// streamListener hands accepted tunnel streams to an http.Server, so one
// stream carries a keep-alive HTTP/1.1 connection like any socket would.
type streamListener struct {
	ctx    context.Context
	cancel context.CancelFunc
	conns  chan net.Conn
	once   sync.Once
}

func newStreamListener(ctx context.Context) *streamListener {
	ctx, cancel := context.WithCancel(ctx)
	return &streamListener{ctx: ctx, cancel: cancel, conns: make(chan net.Conn)}
}

// deliver passes c to Accept; it fails once the listener is closed.
func (l *streamListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.ctx.Done():
		_ = c.Close()
		return false
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(l.cancel)
	return nil
}

func (l *streamListener) Addr() net.Addr { return tunnelAddr{} }

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return "tunnel" }
