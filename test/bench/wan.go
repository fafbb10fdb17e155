package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// wanLink is a userspace WAN emulator: a TCP forwarder that, in each
// direction, holds every byte for half a round trip after it has left a
// bandwidth-capped bottleneck, and that can be cut into a black hole. The
// bench's kernel has no netem, so the WAN figures put one of these between
// the agent and the hub, and an identical one between the direct client and
// the member.
//
// It is our own rather than github.com/Shopify/toxiproxy/v2 as a library:
// toxiproxy would bring gorilla/mux, rs/zerolog, rs/xid, urfave/cli and
// tomb.v1 into the main go.mod for ~250 lines of forwarding, and it models
// neither the TCP handshake's round trip nor a serialising bottleneck
// (its bandwidth toxic sleeps per chunk; its latency toxic delays chunks
// only). The token bucket is golang.org/x/time/rate, already a dependency.
//
// What it models, per connection through the link:
//
//   - the three-way handshake: the target is dialled, and the client's
//     first bytes are read, one RTT after the client connected, so a
//     client-first protocol's first byte reaches the target 1.5 RTT after
//     connect, as over a real link;
//   - propagation: every chunk is delivered RTT/2 after it left the
//     bottleneck, in order, with FIN passed on in the same order;
//   - the bottleneck: each direction of the link is one token bucket shared
//     by every connection through it, at bytesPerSec; a sender that
//     outruns it is held back by the bucket and then by its own socket
//     buffer, as by a full router queue.
//
// What it does not: loss, reordering, jitter, and the end-to-end TCP
// control loop. Each side's TCP talks to the forwarder over loopback (split
// TCP, like a performance-enhancing proxy), so a direct TCP connection
// behaves as if its window were always tuned to the link; a tunnel's own
// stream windows (yamux), which run end to end across the link, do see the
// round trip.
type wanLink struct {
	// Addr is where the link listens; clients dial it instead of target.
	Addr   string
	target string
	rtt    time.Duration
	// forward carries client→target bytes, back target→client; nil: no cap.
	forward, back *rate.Limiter

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cut    atomic.Bool

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

const (
	// wanReadSize is the most one read takes off a socket: the unit the
	// bottleneck serialises and the link delivers.
	wanReadSize = 32 << 10
	// wanInFlight bounds the chunks on the wire in one direction of one
	// connection; with a rate cap the bucket keeps far fewer in flight.
	wanInFlight = 4096
)

// newWANLink listens on listen (host:port) and relays each connection to
// target over an emulated link with round trip rtt and bytesPerSec in each
// direction (0: no cap). Close stops it.
func newWANLink(listen, target string, rtt time.Duration, bytesPerSec float64) (*wanLink, error) {
	if rtt < 0 || bytesPerSec < 0 {
		return nil, fmt.Errorf("wan link: negative rtt %s or rate %g", rtt, bytesPerSec)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("wan link to %s: %w", target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &wanLink{
		Addr: ln.Addr().String(), target: target, rtt: rtt,
		ln: ln, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{},
	}
	if bytesPerSec > 0 {
		// The burst is what the bucket lets through at once: at least two
		// reads, so timer slack on a busy machine does not cost rate, and
		// at most 5 ms of the link.
		burst := max(2*wanReadSize, int(bytesPerSec*0.005))
		l.forward = rate.NewLimiter(rate.Limit(bytesPerSec), burst)
		l.back = rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	}
	l.wg.Go(l.serve)
	return l, nil
}

// Cut turns the link into a black hole, for good: every byte in flight
// and every byte sent later is dropped, no FIN or RST reaches either end,
// and new connections are accepted (the forwarder's kernel answers the
// SYN) but never reach the target. Both ends' sockets stay open until
// they give up on their own, as over a dead WAN. The forwarder keeps
// reading what the ends send, so their writes do not block; a real dead
// link would leave them retransmitting, which an application's own
// keepalive notices just the same.
func (l *wanLink) Cut() { l.cut.Store(true) }

// Close stops listening, closes every connection through the link and
// waits for its goroutines. It is idempotent.
func (l *wanLink) Close() error {
	l.cancel()
	err := l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (l *wanLink) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		if !l.track(c) {
			return
		}
		l.wg.Go(func() { l.relay(c) })
	}
}

// track registers c for Close; false (and c closed) once the link closes.
func (l *wanLink) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		_ = c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *wanLink) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	_ = c.Close()
}

// relay waits out the handshake's round trip, dials the target and pipes
// both ways until both directions have ended.
func (l *wanLink) relay(c net.Conn) {
	defer l.forget(c)
	if !l.sleep(l.rtt) {
		return
	}
	if l.cut.Load() {
		l.sink(c)
		return
	}
	var d net.Dialer
	up, err := d.DialContext(l.ctx, "tcp", l.target)
	if err != nil {
		// As a refused connection: the client sees a reset.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return
	}
	if !l.track(up) {
		return
	}
	defer l.forget(up)
	var wg sync.WaitGroup
	wg.Go(func() { l.pipe(up, c, l.forward) })
	wg.Go(func() { l.pipe(c, up, l.back) })
	wg.Wait()
}

// sink reads and drops everything c sends until it closes or the link
// does: a connection that came in while the link was cut.
func (l *wanLink) sink(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
}

// chunk is bytes on the wire and when they reach the far end; the last
// chunk of a direction carries how src ended (end set; err nil for EOF).
type chunk struct {
	b   []byte
	at  time.Time
	end bool
	err error
}

// pipe carries src's bytes to dst through lim and the propagation delay.
// The reader takes bytes off src as the bottleneck lets them through and
// stamps each chunk with its arrival time; the writer delivers each chunk
// when it arrives. While the link is up, src's end of stream is passed on
// after the last chunk, when it arrives (FIN: CloseWrite; an error: Close);
// once it is cut, nothing is passed on at all.
func (l *wanLink) pipe(dst, src net.Conn, lim *rate.Limiter) {
	oneWay := l.rtt / 2
	q := make(chan chunk, wanInFlight)
	l.wg.Go(func() {
		defer close(q)
		send := func(c chunk) bool {
			select {
			case q <- c:
				return true
			case <-l.ctx.Done():
				return false
			}
		}
		buf := make([]byte, wanReadSize)
		for {
			n, err := src.Read(buf)
			if n > 0 && !l.cut.Load() {
				if lim != nil && lim.WaitN(l.ctx, n) != nil {
					return // the link closed
				}
				// Cut while it waited at the bottleneck: dropped.
				if !l.cut.Load() && !send(chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(oneWay)}) {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				send(chunk{at: time.Now().Add(oneWay), end: true, err: err})
				return
			}
		}
	})
	defer func() {
		for range q { // the reader stops once src or the link is closed
		}
	}()
	for c := range q {
		if !l.sleep(time.Until(c.at)) {
			return // the link closed
		}
		if l.cut.Load() {
			continue // lost on the wire
		}
		switch {
		case !c.end:
			if _, err := dst.Write(c.b); err != nil {
				// The far end is gone, and so is this direction: unblock
				// the reader.
				_ = src.Close()
				return
			}
		case c.err != nil:
			_ = dst.Close()
		default:
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
	}
}

// sleep waits d or until the link closes; false if it closed.
func (l *wanLink) sleep(d time.Duration) bool {
	if d <= 0 {
		return l.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}
