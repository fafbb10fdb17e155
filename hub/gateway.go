package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/tunnel"
)

// hostSuffix marks the synthetic host the gateway's transport dials; the
// cluster name is the label before it.
const hostSuffix = ".cluster.backhaul"

type ctxKey int

const requestIDKey ctxKey = iota

// Gateway serves /clusters/{name}/<kubernetes path> through the tunnel.
type Gateway struct {
	Authn    Authenticator
	Authz    Authorizer
	Clusters ClusterSource
	Registry *Registry
	Log      hclog.Logger
	Metrics  *Metrics
	// DialTimeout is what the agent gets to reach its API server.
	DialTimeout time.Duration

	proxy     *httputil.ReverseProxy
	transport *http.Transport
}

// NewGateway wires the reverse proxy; fields must be set before.
func NewGateway(g *Gateway) *Gateway {
	g.transport = &http.Transport{
		DialContext:         g.dial,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		// Streams are cheap, but a tunnel might be slow to answer a dial.
		ResponseHeaderTimeout: 0,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: g.transport,
		// 0, not -1: ReverseProxy flushes responses of unknown length
		// (watches, chunked lists) on every write anyway, and a small
		// response then goes out in one write instead of several.
		FlushInterval: 0,
		ErrorHandler:  g.proxyError,
		ErrorLog:      g.Log.Named("reverseproxy").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	if g.Registry != nil {
		g.Registry.onEmpty = func(string) { g.transport.CloseIdleConnections() }
	}
	return g
}

// ServeHTTP implements http.Handler for "/clusters/{name}/{path...}".
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { g.Metrics.request(rec.class()) }()
	w = rec

	name := r.PathValue("name")
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		g.Metrics.failure(reasonUnknownCluster)
		kubestatus.Write(w, http.StatusNotFound, fmt.Sprintf("cluster %q not found: invalid name", name))
		return
	}
	user, ok, err := g.Authn.Authenticate(r)
	if err != nil || !ok {
		g.Metrics.failure(reasonUnauthorized)
		msg, code := "Unauthorized", authStatus(err, http.StatusUnauthorized)
		if code != http.StatusUnauthorized {
			w.Header().Set("Retry-After", "1")
			msg = "cannot authenticate now: the hub's host cluster is unavailable"
			g.Log.Warn("authentication unavailable", "error", err)
		} else if err != nil {
			msg = "Unauthorized: " + err.Error()
		}
		kubestatus.Write(w, code, msg)
		return
	}
	// Fail fast, with the cluster's name, before the transport tries.
	if _, ref := g.admission().admit(r.Context(), user, name, nil); ref != nil {
		kubestatus.Write(w, ref.code, ref.msg)
		return
	}
	id := newRequestID()
	ctx := context.WithValue(r.Context(), requestIDKey, id)
	ctx = context.WithValue(ctx, userKey{}, user)
	w.Header().Set("Backhaul-Request-Id", id)
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

type userKey struct{}

func (g *Gateway) admission() admission {
	return admission{authz: g.Authz, clusters: g.Clusters, registry: g.Registry, metrics: g.Metrics}
}

// rewrite strips the caller's credentials and identity claims and replaces
// them with the identity the hub authenticated, for the agent to impersonate.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	name := pr.In.PathValue("name")
	prefix := "/clusters/" + name
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = name + hostSuffix
	pr.Out.Host = ""
	pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
	if pr.In.URL.RawPath != "" {
		pr.Out.URL.RawPath = strings.TrimPrefix(pr.In.URL.RawPath, prefix)
	}
	if pr.Out.URL.Path == "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = "/", ""
	}
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery

	stripIdentity(pr.Out.Header)
	u, _ := pr.In.Context().Value(userKey{}).(*User)
	if u != nil {
		setImpersonation(pr.Out.Header, u)
	}
	if id, _ := pr.In.Context().Value(requestIDKey).(string); id != "" {
		pr.Out.Header.Set("Backhaul-Request-Id", id)
	}
}

// stripIdentity removes every header by which a caller could claim an
// identity downstream.
func stripIdentity(h http.Header) {
	for k := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Authorization" || ck == "Proxy-Authorization" || ck == "Cookie" ||
			strings.HasPrefix(ck, "Impersonate-") || strings.HasPrefix(ck, "X-Remote-") {
			delete(h, k)
		}
	}
}

// setImpersonation writes u as Impersonate-* headers, escaping extra keys as
// client-go does so keys with '/' survive.
func setImpersonation(h http.Header, u *User) {
	h.Set("Impersonate-User", u.Name)
	if u.UID != "" {
		h.Set("Impersonate-Uid", u.UID)
	}
	for _, g := range u.Groups {
		h.Add("Impersonate-Group", g)
	}
	for k, vs := range u.Extra {
		for _, v := range vs {
			h.Add("Impersonate-Extra-"+escapeExtraKey(k), v)
		}
	}
}

func escapeExtraKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-!#$&'*+.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// dial opens a tunnel stream to the API server of the cluster named by addr.
func (g *Gateway) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	name, ok := strings.CutSuffix(host, hostSuffix)
	if !ok {
		return nil, fmt.Errorf("gateway dial to %q: not a cluster host", addr)
	}
	sess, err := g.Registry.Get(name)
	if err != nil {
		return nil, err
	}
	id, _ := ctx.Value(requestIDKey).(string)
	start := time.Now()
	c, err := sess.Open(ctx, tunnel.Request{Kind: tunnel.KindAPIServer, Timeout: g.DialTimeout, RequestID: id})
	if err != nil {
		return nil, &ClusterError{Cluster: name, Err: err}
	}
	g.Metrics.streamOpened(tunnel.KindAPIServer.String(), time.Since(start).Seconds())
	return &countedConn{Conn: c, m: g.Metrics}, nil
}

// proxyError turns transport failures into a Status with the right code.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	name := r.PathValue("name")
	code, reason, msg := classify(name, err)
	g.Metrics.failure(reason)
	g.Log.Warn("gateway request failed", "cluster", name, "request_id", r.Context().Value(requestIDKey), "code", code, "error", err)
	kubestatus.Write(w, code, msg)
}

func classify(name string, err error) (code int, reason, msg string) {
	var de *tunnel.DialError
	switch {
	case errors.As(err, &de):
		return de.Code.HTTPStatus(), de.Code.String(), fmt.Sprintf("cluster %s: %s", name, de.Message)
	case errors.Is(err, ErrNotConnected), errors.Is(err, tunnel.ErrSessionClosed):
		return http.StatusServiceUnavailable, reasonNotConnected, fmt.Sprintf("cluster %s is not connected", name)
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout", fmt.Sprintf("cluster %s: timed out", name)
	case errors.Is(err, context.Canceled):
		return 499, "canceled", "request canceled"
	default:
		return http.StatusBadGateway, reasonBadGateway, fmt.Sprintf("cluster %s: %v", name, err)
	}
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

// statusRecorder notes the response code class for metrics; it passes
// Flush and Hijack through (watches and upgrades need them).
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) class() string {
	if s.code == 0 {
		return "none"
	}
	return fmt.Sprintf("%dxx", s.code/100)
}
