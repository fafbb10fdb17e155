package session

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/tunnel"
)

// Dialer is the member dialer: the one way the hub opens a stream to a
// member, whether for a gateway request, a CONNECT tunnel, or one of the
// hub's own controllers. It times each stream's set-up and counts its
// bytes.
type Dialer struct {
	registry *Registry
	metrics  *Metrics
	// timeout is what the agent gets to reach its destination.
	timeout time.Duration
}

// NewDialer returns the dialer over reg's sessions; each stream gives its
// agent timeout to reach the destination.
func NewDialer(reg *Registry, m *Metrics, timeout time.Duration) *Dialer {
	return &Dialer{registry: reg, metrics: m, timeout: timeout}
}

// Open opens a stream for req on s, the session admission chose. Errors
// are *ClusterError, wrapping the tunnel's *tunnel.DialError when the
// agent refused.
func (d *Dialer) Open(ctx context.Context, s *Session, req tunnel.Request) (net.Conn, error) {
	req.Timeout = d.timeout
	start := time.Now()
	c, err := s.tunnel.Open(ctx, req)
	if err != nil {
		return nil, &ClusterError{Cluster: s.Cluster(), Err: err}
	}
	d.metrics.streamOpened(req.Kind.String(), time.Since(start).Seconds())
	return &countedConn{Conn: c, m: d.metrics}, nil
}

type requestIDKey struct{}

// WithRequestID marks ctx with the id of the request it serves; a stream
// [Dialer.HTTP] opens for the request carries it in its header.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// HTTP carries HTTP/1.1 to the member's API server over streams of s. Its
// connections are pooled with the session and go when it goes; the
// request's URL host is not used for dialing.
func (d *Dialer) HTTP(s *Session) http.RoundTripper {
	return s.transport(func() *http.Transport {
		return &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				id, _ := ctx.Value(requestIDKey{}).(string)
				return d.Open(ctx, s, tunnel.Request{Kind: tunnel.KindAPIServer, RequestID: id})
			},
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		}
	})
}

// Config returns a client configuration that reaches cluster's API server
// through whichever session serves the cluster at each request, acting as
// the given identity. Calls fail with a *ClusterError wrapping
// ErrNotConnected while no agent is connected, and work again as soon as
// one is: a client built once stays usable.
func (d *Dialer) Config(cluster string, as rest.ImpersonationConfig) *rest.Config {
	return &rest.Config{
		// Only error messages show the host: the transport picks the session.
		Host:        "http://" + cluster,
		Transport:   clusterTransport{d: d, cluster: cluster},
		UserAgent:   "backhaul-hub",
		QPS:         -1, // the member's priority and fairness limits us, not client-go
		Impersonate: as,
	}
}

// clusterTransport sends each request over the session that serves the
// cluster when the request is made.
type clusterTransport struct {
	d       *Dialer
	cluster string
}

func (t clusterTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s, err := t.d.registry.Get(t.cluster)
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close() // a RoundTripper always closes the body
		}
		return nil, err
	}
	return t.d.HTTP(s).RoundTrip(r)
}

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
