package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Forwarder relays TCP connections from a loopback port to a target, and
// can cut them: a process given Addr instead of the target can be cut off
// from it (a network partition the test controls) and reconnected.
type Forwarder struct {
	// Addr is where the forwarder listens (127.0.0.1:PORT from
	// [NewForwarder]).
	Addr   string
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	cut    bool
	closed bool
	conns  map[net.Conn]struct{} // both ends of every live relay
}

// NewForwarder listens on 127.0.0.1:0 and relays each connection to
// target (host:port). Close stops it.
func NewForwarder(target string) (*Forwarder, error) {
	return NewForwarderOn("127.0.0.1:0", target)
}

// NewForwarderOn is [NewForwarder] listening on listen (host:port): a
// TCP load balancer in front of a Service's NodePort, say.
func NewForwarderOn(listen, target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forwarder to %s: %w", target, err)
	}
	f := &Forwarder{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Go(f.serve)
	return f, nil
}

func (f *Forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		f.mu.Lock()
		refuse := f.cut || f.closed
		if !refuse {
			f.conns[c] = struct{}{}
		}
		f.mu.Unlock()
		if refuse {
			reset(c)
			continue
		}
		f.wg.Go(func() { f.relay(c) })
	}
}

// relay dials the target for c and copies both ways until either side
// ends or Cut resets them.
func (f *Forwarder) relay(c net.Conn) {
	defer f.forget(c)
	up, err := net.DialTimeout("tcp", f.target, 10*time.Second)
	if err != nil {
		reset(c)
		return
	}
	f.mu.Lock()
	if f.cut || f.closed {
		f.mu.Unlock()
		reset(c)
		reset(up)
		return
	}
	f.conns[up] = struct{}{}
	f.mu.Unlock()
	defer f.forget(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			// The source half-closed: pass it on.
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		} else {
			_ = dst.Close()
			_ = src.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	_ = c.Close()
	_ = up.Close()
}

func (f *Forwarder) forget(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// Cut resets every live connection (both ends see a reset) and refuses new
// ones until Restore: each is accepted and reset at once.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	f.cut = true
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	for _, c := range conns {
		reset(c)
	}
}

// Restore relays new connections again.
func (f *Forwarder) Restore() {
	f.mu.Lock()
	f.cut = false
	f.mu.Unlock()
}

// IsCut says whether the forwarder is cut.
func (f *Forwarder) IsCut() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut
}

// Close stops listening, resets every live connection and waits for the
// relays to end. It is idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	err := f.ln.Close()
	f.Cut()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// reset closes c with SO_LINGER 0, so the other end gets a RST rather
// than an orderly end of stream.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
