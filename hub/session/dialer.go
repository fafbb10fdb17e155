package session

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/tunnel"
)

// Dialer is the member dialer: the one way the hub opens a stream to a
// member, whether for a gateway request, a CONNECT tunnel, or one of the
// hub's own controllers, and whether the cluster's agent is connected to
// this replica or to a peer. It times each stream's set-up and counts its
// bytes.
type Dialer struct {
	registry *Registry
	peers    Peers
	metrics  *Metrics
	// timeout is what the agent gets to reach its destination.
	timeout time.Duration

	mu    sync.Mutex
	pools map[remoteKey]*http.Transport
}

// remoteKey names the HTTP pool of one cluster through one peer
// connection.
type remoteKey struct {
	kind    tunnel.Kind
	peer    Peer
	cluster string
}

// NewDialer returns the dialer over reg's sessions and, for clusters whose
// agents are connected elsewhere, peers'. Each stream gives its agent
// timeout to reach the destination.
func NewDialer(reg *Registry, peers Peers, m *Metrics, timeout time.Duration) *Dialer {
	if peers == nil {
		peers = NoPeers{}
	}
	return &Dialer{registry: reg, peers: peers, metrics: m, timeout: timeout, pools: map[remoteKey]*http.Transport{}}
}

// Route finds how to reach cluster now: this replica's newest session of
// it, else the peers that hold one. It fails with a *ClusterError wrapping
// ErrNotConnected when no replica holds one.
func (d *Dialer) Route(cluster string) (*Route, error) {
	s, err := d.registry.Get(cluster)
	// A replica that drains sends new streams to where its agents are
	// moving, so they can let go of this one sooner.
	if err != nil || d.registry.draining.Load() {
		if peers := d.peers.Holders(cluster); len(peers) > 0 {
			return &Route{cluster: cluster, peers: peers, fallback: s}, nil
		}
	}
	if err != nil {
		return nil, &ClusterError{Cluster: cluster, Err: ErrNotConnected}
	}
	return &Route{cluster: cluster, local: s}, nil
}

// routeExcept is Route without session s.
func (d *Dialer) routeExcept(cluster string, s *Session) (*Route, error) {
	if other := d.registry.newestExcept(cluster, s); other != nil {
		return &Route{cluster: cluster, local: other}, nil
	}
	if peers := d.peers.Holders(cluster); len(peers) > 0 {
		return &Route{cluster: cluster, peers: peers}, nil
	}
	return nil, &ClusterError{Cluster: cluster, Err: ErrNotConnected}
}

// Connected says whether any replica holds a session of cluster.
func (d *Dialer) Connected(cluster string) bool {
	return d.registry.Connected(cluster) || len(d.peers.Holders(cluster)) > 0
}

// Replicas is how many replicas serve, this one included.
func (d *Dialer) Replicas() int { return d.peers.Replicas() }

// Open opens a stream for req along r: on the local session, or through
// the first peer that still holds one. Errors are *ClusterError, wrapping
// the *tunnel.DialError of an agent or peer that refused.
func (d *Dialer) Open(ctx context.Context, r *Route, req tunnel.Request) (net.Conn, error) {
	return d.openRoute(ctx, r, req, false)
}

// openRoute is Open; early opens local streams without waiting for the
// agent's reply (tunnel.Session.OpenEarly), which then comes with the
// first Read.
func (d *Dialer) openRoute(ctx context.Context, r *Route, req tunnel.Request, early bool) (net.Conn, error) {
	if r.local != nil {
		open := func(req tunnel.Request) (net.Conn, error) { return r.local.open(ctx, req) }
		if early {
			open = func(req tunnel.Request) (net.Conn, error) { return r.local.openEarly(ctx, req) }
		}
		c, err := d.open(ctx, r.cluster, r.local, req, open)
		var de *tunnel.DialError
		if err == nil || errors.As(err, &de) || ctx.Err() != nil {
			return c, err
		}
		// The session failed under us rather than the agent refusing: an
		// agent that moved away, or one closing a second session it did
		// not want. Go along whatever else serves the cluster, once.
		again, rerr := d.routeExcept(r.cluster, r.local)
		if rerr != nil {
			return nil, err
		}
		return d.openRoute(ctx, again, req, early)
	}
	var err error
	for _, p := range r.peers {
		var c net.Conn
		if c, err = d.openVia(ctx, p, r.cluster, req, early); !stale(err) {
			return c, err
		}
	}
	if r.fallback != nil && ctx.Err() == nil {
		return d.openRoute(ctx, &Route{cluster: r.cluster, local: r.fallback}, req, early)
	}
	return nil, err
}

func (d *Dialer) openVia(ctx context.Context, p Peer, cluster string, req tunnel.Request, early bool) (net.Conn, error) {
	open := func(req tunnel.Request) (net.Conn, error) { return p.Open(ctx, cluster, req) }
	if early {
		open = func(req tunnel.Request) (net.Conn, error) { return p.OpenEarly(ctx, cluster, req) }
	}
	return d.open(ctx, cluster, nil, req, open)
}

// open opens a stream with open, on local when it is this replica's
// session (nil: through a peer).
func (d *Dialer) open(_ context.Context, cluster string, local *Session, req tunnel.Request, open func(tunnel.Request) (net.Conn, error)) (net.Conn, error) {
	req.Timeout = d.timeout
	start := time.Now()
	c, err := open(req)
	if err != nil {
		return nil, &ClusterError{Cluster: cluster, Err: err}
	}
	return d.metrics.counted(c, local, req.Kind, start), nil
}

// stale says a peer no longer holds the cluster (the directory was behind
// it, or it lost its session), or its connection is gone: the next holder
// may do. Only reads go out early, so whatever failed so is safe to send
// again.
func stale(err error) bool {
	var de *tunnel.DialError
	return errors.As(err, &de) && de.Code == tunnel.CodeUnavailable || errors.Is(err, tunnel.ErrSessionClosed)
}

type requestIDKey struct{}

// WithRequestID marks ctx with the id of the request it serves; a stream
// [Dialer.HTTP] opens for the request carries it in its header.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// HTTP carries a caller's HTTP/1.1 to the member's API server along r
// (tunnel.KindAPIServer streams, on which agents refuse the hub's own
// identity). Connections are pooled with the local session, or per peer
// connection and cluster, and go when those go; the request's URL host is
// not used for dialing.
func (d *Dialer) HTTP(r *Route) http.RoundTripper { return d.http(r, tunnel.KindAPIServer) }

// HubHTTP is HTTP for the hub's own requests (tunnel.KindHubAPIServer
// streams), the only ones that may carry the hub's identity. No front end
// that carries callers uses it.
func (d *Dialer) HubHTTP(r *Route) http.RoundTripper { return d.http(r, tunnel.KindHubAPIServer) }

func (d *Dialer) http(r *Route, kind tunnel.Kind) http.RoundTripper {
	if r.local != nil {
		t := r.local.transport(kind, func() *http.Transport {
			return newTransport(func(ctx context.Context) (net.Conn, error) {
				return d.openRoute(ctx, r, tunnel.Request{Kind: kind, RequestID: requestID(ctx)}, sendsEarly(ctx))
			})
		})
		return localTransport{d: d, r: r, kind: kind, t: t}
	}
	return remoteTransport{d: d, r: r, kind: kind}
}

// Early streams. A request that is safe to repeat (a read) goes out right
// behind its stream's header instead of a round trip after it
// (tunnel.Session.OpenEarly): the agent reads no further than a header it
// refuses, so a refusal costs only the bytes sent, and a session that ends
// before the reply can be left for another with the read sent again, as
// TLS early data is limited to (RFC 8470). Writes and upgrades wait for
// the reply as before: a session that ends under them (an agent closing a
// session it did not want, a peer that lost its own) is then known not to
// have carried them, and they go along another without risk of being
// applied, or an exec started, twice.

type earlyKey struct{}

// earlyFor marks req's context when its stream may be opened early.
func earlyFor(req *http.Request) *http.Request {
	if !safeToRepeat(req) {
		return req
	}
	return req.WithContext(context.WithValue(req.Context(), earlyKey{}, true))
}

// sendsEarly says whether the request a dial is for (its context's values
// come along) may have its stream opened early.
func sendsEarly(ctx context.Context) bool {
	early, _ := ctx.Value(earlyKey{}).(bool)
	return early
}

// localTransport is a local session's pool. When that session ends after
// an early stream was opened on it but before the agent's reply, the read
// goes along whatever else serves the cluster, once, as Open does for a
// session that fails at the open itself.
type localTransport struct {
	d    *Dialer
	r    *Route
	kind tunnel.Kind
	t    *http.Transport
}

func (t localTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.t.RoundTrip(earlyFor(req))
	if err == nil || !errors.Is(err, tunnel.ErrSessionClosed) || req.Context().Err() != nil || !safeToRepeat(req) {
		return resp, err
	}
	again, rerr := t.d.routeExcept(t.r.cluster, t.r.local)
	if rerr != nil {
		return nil, err
	}
	if req, rerr = rewound(req); rerr != nil {
		return nil, err
	}
	return t.d.http(again, t.kind).RoundTrip(req)
}

// safeToRepeat says whether req may be sent again when the first attempt
// may or may not have reached the member: a safe method (RFC 9110 9.2.1),
// and not an upgrade, which starts something (an exec) rather than reading.
// Only these go out early.
func safeToRepeat(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return req.Header.Get("Upgrade") == ""
	}
	return false
}

func newTransport(dial func(ctx context.Context) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// remoteTransport tries the route's peers in order while a peer turns out
// not to hold the cluster any more and the request can be sent again.
type remoteTransport struct {
	d    *Dialer
	r    *Route
	kind tunnel.Kind
}

func (t remoteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var err error
	for i, p := range t.r.peers {
		if i > 0 {
			if req, err = rewound(req); err != nil {
				return nil, err
			}
		}
		var resp *http.Response
		if resp, err = t.d.pool(p, t.r.cluster, t.kind).RoundTrip(earlyFor(req)); !stale(err) {
			return resp, err
		}
	}
	// A draining replica's own session still serves while its agents move.
	if t.r.fallback != nil && req.Context().Err() == nil {
		if req, err2 := rewound(req); err2 == nil {
			return t.d.http(&Route{cluster: t.r.cluster, local: t.r.fallback}, t.kind).RoundTrip(req)
		}
	}
	return nil, err
}

// rewound is req ready to be sent again, if its body allows.
func rewound(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("the peer no longer holds the cluster and the request body cannot be sent again")
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	r2 := req.Clone(req.Context())
	r2.Body = body
	return r2, nil
}

// pool is the HTTP pool of cluster through p's current connection; it is
// dropped when that connection ends.
func (d *Dialer) pool(p Peer, cluster string, kind tunnel.Kind) *http.Transport {
	k := remoteKey{kind: kind, peer: p, cluster: cluster}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.pools[k]; t != nil {
		return t
	}
	t := newTransport(func(ctx context.Context) (net.Conn, error) {
		return d.openVia(ctx, p, cluster, tunnel.Request{Kind: kind, RequestID: requestID(ctx)}, sendsEarly(ctx))
	})
	d.pools[k] = t
	// The pool lives as long as the peer connection (its streams die with
	// it); this goroutine ends with it too.
	go func() {
		<-p.Done()
		d.mu.Lock()
		delete(d.pools, k)
		d.mu.Unlock()
		t.CloseIdleConnections()
	}()
	return t
}

// Config returns a client configuration that reaches cluster's API server
// along whichever route serves the cluster at each request, acting as the
// given identity on tunnel.KindHubAPIServer streams: it is the hub's own
// client, for its controllers, never a caller's. Calls fail with a *ClusterError wrapping ErrNotConnected
// while no replica holds a session, and work again as soon as one does: a
// client built once stays usable.
func (d *Dialer) Config(cluster string, as rest.ImpersonationConfig) *rest.Config {
	return &rest.Config{
		// Only error messages show the host: the transport picks the route.
		Host:        "http://" + cluster,
		Transport:   clusterTransport{d: d, cluster: cluster},
		UserAgent:   "backhaul-hub",
		QPS:         -1, // the member's priority and fairness limits us, not client-go
		Impersonate: as,
	}
}

// clusterTransport sends each request along the route that serves the
// cluster when the request is made.
type clusterTransport struct {
	d       *Dialer
	cluster string
}

func (t clusterTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	route, err := t.d.Route(t.cluster)
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close() // a RoundTripper always closes the body
		}
		return nil, err
	}
	return t.d.HubHTTP(route).RoundTrip(r)
}
