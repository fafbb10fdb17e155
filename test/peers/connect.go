package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// serveConnect is the HTTP CONNECT front end of the remotedialer server:
// each connection carries one CONNECT whose target dial dials, then bytes
// both ways until either side closes.
func serveConnect(ctx context.Context, ln net.Listener, dial func(ctx context.Context, addr string) (net.Conn, error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Go(func() { handleConnect(ctx, c, dial) })
	}
}

func handleConnect(ctx context.Context, c net.Conn, dial func(ctx context.Context, addr string) (net.Conn, error)) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	br := bufio.NewReaderSize(c, 4096)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	up, err := dial(dctx, req.Host)
	cancel()
	if err != nil {
		msg := err.Error()
		_, _ = fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the caller sent right behind the CONNECT go first.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	pipe(c, up)
}

// pipe copies both ways and closes both ends once either direction ends.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		_, _ = io.CopyBuffer(dst, src, buf)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	_ = a.Close()
	_ = b.Close()
	<-done
}

// connectDialer reaches a target through an HTTP CONNECT proxy, the way
// kubectl's proxy-url and kube-apiserver's egress selector do: connect to
// the proxy (TCP, TLS or a Unix socket), send CONNECT, read the 200, and
// hand back the connection.
type connectDialer struct {
	network, addr string      // of the proxy
	tls           *tls.Config // nil: plain
	target        string      // host:port asked for
	auth          string      // Proxy-Authorization value, if any
}

// dial is a dialFunc; the address asked for is ignored, the proxy's target
// is the origin.
func (d *connectDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var c net.Conn
	var err error
	if d.tls != nil {
		td := tls.Dialer{Config: d.tls}
		c, err = td.DialContext(ctx, d.network, d.addr)
	} else {
		var nd net.Dialer
		c, err = nd.DialContext(ctx, d.network, d.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial proxy %s: %w", d.addr, err)
	}
	return harness.Connect(ctx, c, d.target, d.auth)
}
