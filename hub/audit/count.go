package audit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// ResponseWriter wraps w to note the response code (and emit
// ResponseStarted for a long-running request when it is written), and to
// count the bytes written to the caller, also through a connection an
// upgrade hijacks. Flush and the rest of http.ResponseController's methods
// reach w through Unwrap. With no audit it is w.
func (a *Request) ResponseWriter(w http.ResponseWriter) http.ResponseWriter {
	if a == nil {
		return w
	}
	return &responseWriter{ResponseWriter: w, a: a}
}

// Conn wraps a CONNECT's tunnel stream to count what the caller sends
// through it (written to the stream) and receives (read from it).
func (a *Request) Conn(stream net.Conn) net.Conn {
	if a == nil {
		return stream
	}
	return countConn(stream, &a.out, &a.in)
}

type responseWriter struct {
	http.ResponseWriter
	a *Request
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) WriteHeader(code int) {
	w.a.Started(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.a.Started(http.StatusOK)
	n, err := w.ResponseWriter.Write(b)
	w.a.out.Add(int64(n))
	return n, err
}

// Hijack is an upgrade switching protocols (exec, attach, port-forward):
// from here on the bytes go through the connection.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.a.Started(http.StatusSwitchingProtocols)
	return countConn(c, &w.a.in, &w.a.out), brw, nil
}

// countingBody counts the request body's bytes as they are read.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countConn counts what is read from c into read and what is written to
// it into written. The wrapper has CloseWrite exactly when c has, since
// copiers (httputil.ReverseProxy, tunnel.Pipe) choose a half-close or a
// close by that.
func countConn(c net.Conn, read, written *atomic.Int64) net.Conn {
	cc := &countingConn{Conn: c, read: read, written: written}
	if _, ok := c.(closeWriter); ok {
		return &countingHalfCloser{cc}
	}
	return cc
}

type closeWriter interface{ CloseWrite() error }

type countingConn struct {
	net.Conn
	read, written *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

type countingHalfCloser struct{ *countingConn }

func (c *countingHalfCloser) CloseWrite() error { return c.Conn.(closeWriter).CloseWrite() }
