package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitBound is how long a test waits for something that should happen
// promptly. It only turns a hang into a failure; nothing is measured.
const waitBound = 10 * time.Second

// testConfig is DefaultConfig with the smallest stream window, so a few MiB
// of payload go through many window updates.
func testConfig(t testing.TB) *Config {
	cfg := DefaultConfig()
	cfg.StreamWindow = 256 << 10
	cfg.Logger = testLogger(t)
	return cfg
}

// transport makes both ends of a session over one kind of conn. via, when
// set, maps the listening address to the one the client dials instead (a
// proxy in between); transports without addresses skip such tests.
type transport struct {
	name    string
	connect func(t *testing.T, cfg *Config, via func(addr string) string) (client, server *Session)
}

var transports = []transport{
	{name: "pipe", connect: connectPipe},
	{name: "tcp", connect: connectTCP},
	{name: "websocket", connect: connectWebsocket},
}

// forEachTransport runs the same case over every transport.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

func closeOnCleanup(t *testing.T, s *Session) {
	t.Cleanup(func() { _ = s.Close() })
}

func connectPipe(t *testing.T, cfg *Config, via func(string) string) (*Session, *Session) {
	if via != nil {
		t.Skip("net.Pipe has no address to put a proxy in front of")
	}
	a, b := net.Pipe()
	server, err := NewSession(b, false, cfg)
	require.NoError(t, err)
	closeOnCleanup(t, server)
	client, err := NewSession(a, true, cfg)
	require.NoError(t, err)
	closeOnCleanup(t, client)
	return client, server
}

func connectTCP(t *testing.T, cfg *Config, via func(string) string) (*Session, *Session) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(accepted)
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	addr := ln.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	cc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	sc, ok := <-accepted
	require.True(t, ok, "accept failed")

	server, err := NewSession(sc, false, cfg)
	require.NoError(t, err)
	closeOnCleanup(t, server)
	client, err := NewSession(cc, true, cfg)
	require.NoError(t, err)
	closeOnCleanup(t, client)
	return client, server
}

// connectWebsocket runs the real thing: an HTTPS server whose handler calls
// Accept, and a Dialer that trusts its certificate.
func connectWebsocket(t *testing.T, cfg *Config, via func(string) string) (*Session, *Session) {
	accepted := make(chan *Session, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, cfg)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		accepted <- s
	}))
	t.Cleanup(srv.Close)
	d := testDialer(t, srv, via)
	d.Config = cfg
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	client, err := d.Dial(ctx)
	require.NoError(t, err)
	closeOnCleanup(t, client)
	select {
	case server := <-accepted:
		closeOnCleanup(t, server)
		return client, server
	case <-ctx.Done():
		t.Fatal("server side of the websocket never appeared")
		return nil, nil
	}
}

// testDialer dials srv over wss, trusting its certificate and no proxy.
func testDialer(t *testing.T, srv *httptest.Server, via func(string) string) *Dialer {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	addr := srv.Listener.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	d := &Dialer{
		URL:              "wss://" + addr,
		TLSConfig:        &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
		HandshakeTimeout: waitBound,
		Config:           testConfig(t),
	}
	// A refused upgrade leaves a keep-alive connection in the pool.
	t.Cleanup(func() {
		if d.client != nil {
			d.client.CloseIdleConnections()
		}
	})
	return d
}

// served is a Serve call running in the background.
type served struct {
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

// serve runs s.Serve(h) until the test ends.
func serve(t *testing.T, s *Session, h Handler) *served {
	ctx, cancel := context.WithCancel(context.Background())
	sv := &served{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(sv.done)
		sv.err = s.Serve(ctx, h)
	}()
	t.Cleanup(func() {
		cancel()
		waitClosed(t, sv.done, "Serve to return at cleanup")
	})
	return sv
}

// waitClosed fails the test if ch is not closed within waitBound.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(waitBound):
		t.Errorf("timed out after %s waiting for %s", waitBound, what)
		return false
	}
}

// echoHandler accepts every stream and echoes it until the opener
// half-closes.
func echoHandler(_ context.Context, in *Incoming) {
	c, err := in.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// echo writes payload, half-closes, and checks the same bytes come back.
// It returns an error rather than failing so it can run in a goroutine.
func echo(conn net.Conn, payload []byte) error {
	writeErr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.Close() // yamux Close is a half-close: reads go on
		}
		writeErr <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo returned %d different bytes, sent %d", len(got), len(payload))
	}
	return nil
}

// stallProxy forwards TCP to a target until stall is called; then it swallows
// everything in both directions and closes nothing, like a dead NAT entry.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	once    sync.Once
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target, stalled: make(chan struct{}), done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		close(p.done)
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) Addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

// cut closes every connection through the proxy, as a reset path or a
// process that died does: no close frame, just the end of the stream.
func (p *stallProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.forward(u, c)
		go p.forward(c, u)
	}
}

func (p *stallProxy) forward(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.stalled:
			<-p.done
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}
