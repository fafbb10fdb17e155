package hub

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/tunnel"
)

// DefaultClusterSuffix makes "NAME.cluster.backhaul:443" name a cluster's
// API server in a CONNECT request.
const DefaultClusterSuffix = ".cluster.backhaul"

// udsUserKey marks requests that arrived on the Unix socket, whose callers
// are trusted by filesystem permission (kube-apiserver's egress selector
// sends no credentials there).
type udsUserKey struct{}

// ConnectProxy is the L4 front end: an HTTP CONNECT proxy whose targets are
// clusters' API servers (CLUSTER+Suffix:PORT) and node addresses advertised
// by node-mode agents (IP:PORT). TLS stays end to end between the caller
// and the member; the hub sees neither requests nor the member's
// credentials.
type ConnectProxy struct {
	Authn    Authenticator
	Authz    Authorizer
	Clusters ClusterSource
	Registry *Registry
	// Suffix marks cluster targets: NAME+Suffix:port.
	Suffix      string
	DialTimeout time.Duration
	Log         hclog.Logger
	Metrics     *Metrics
}

// ServeHTTP implements http.Handler; only CONNECT is served.
func (p *ConnectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.refuse(w, http.StatusMethodNotAllowed, "this is a CONNECT proxy; use the gateway at /clusters/NAME/ for requests")
		return
	}
	user, err := p.authenticate(r)
	if err != nil && authStatus(err, 0) == http.StatusServiceUnavailable {
		p.Metrics.failure(reasonUnauthorized)
		p.Log.Warn("authentication unavailable", "error", err)
		p.refuse(w, http.StatusServiceUnavailable, "cannot authenticate now: the hub's host cluster is unavailable")
		return
	}
	if err != nil {
		p.Metrics.failure(reasonUnauthorized)
		w.Header().Set("Proxy-Authenticate", `Basic realm="backhaul", Bearer realm="backhaul"`)
		p.refuse(w, http.StatusProxyAuthRequired, err.Error())
		return
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || host == "" || port == "" {
		p.refuse(w, http.StatusBadRequest, fmt.Sprintf("CONNECT target %q is not host:port", r.Host))
		return
	}
	name, req, sess, code, msg := p.target(host, r.Host)
	if code != 0 {
		p.refuse(w, code, msg)
		return
	}
	sess, ref := admission{authz: p.Authz, clusters: p.Clusters, registry: p.Registry, metrics: p.Metrics}.admit(r.Context(), user, name, sess)
	if ref != nil {
		p.refuse(w, ref.code, ref.msg)
		return
	}
	id := newRequestID()
	req.RequestID, req.Timeout = id, p.DialTimeout
	start := time.Now()
	stream, err := sess.Open(r.Context(), req)
	if err != nil {
		code, reason, msg := classify(name, err)
		p.Metrics.failure(reason)
		p.Log.Info("CONNECT failed", "cluster", name, "target", r.Host, "user", user.Name, "request_id", id, "code", code, "error", err)
		p.refuse(w, code, msg)
		return
	}
	p.Metrics.streamOpened(req.Kind.String(), time.Since(start).Seconds())
	conn := &countedConn{Conn: stream, m: p.Metrics}

	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = conn.Close()
		p.refuse(w, http.StatusInternalServerError, "cannot take over the connection")
		return
	}
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = client.Close()
		_ = conn.Close()
		return
	}
	// Bytes the client sent after the CONNECT header (a TLS ClientHello,
	// say) may already sit in the server's read buffer; bufferedConn
	// delivers them first.
	p.Log.Debug("CONNECT established", "cluster", name, "user", user.Name, "request_id", id)
	tunnel.Pipe(context.WithoutCancel(r.Context()), &bufferedConn{Conn: client, r: brw.Reader}, conn)
}

// target resolves a CONNECT host: CLUSTER+Suffix names a cluster's API
// server; an IP address goes to the node-mode agent that advertised it. A
// non-zero code is a refusal with msg.
func (p *ConnectProxy) target(host, hostport string) (cluster string, req tunnel.Request, sess *tunnel.Session, code int, msg string) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := unroutable(ip); why != "" {
			p.Metrics.failure(reasonForbidden)
			return "", req, nil, http.StatusForbidden, fmt.Sprintf("%s is %s and is never routed", ip, why)
		}
		cluster, sess, err = p.Registry.Route(ip)
		if err != nil {
			p.Metrics.failure(reasonNoRoute)
			return "", req, nil, http.StatusNotFound, fmt.Sprintf("no route to %s: %v", hostport, err)
		}
		return cluster, tunnel.Request{Kind: tunnel.KindTCP, Address: hostport}, sess, 0, ""
	}
	name, ok := strings.CutSuffix(strings.ToLower(host), p.Suffix)
	if !ok || len(validation.IsDNS1123Label(name)) > 0 {
		p.Metrics.failure(reasonUnknownCluster)
		return "", req, nil, http.StatusNotFound, fmt.Sprintf("no route to %s: targets are CLUSTER%s:PORT or a node IP:PORT", hostport, p.Suffix)
	}
	return name, tunnel.Request{Kind: tunnel.KindAPIServerTCP}, nil, 0, ""
}

// authenticate takes a client certificate, Proxy-Authorization (Bearer, or
// Basic whose password is a token, which is what client-go's proxy-url with
// user info sends), or the Unix socket's configured identity.
func (p *ConnectProxy) authenticate(r *http.Request) (*User, error) {
	if u, ok := r.Context().Value(udsUserKey{}).(*User); ok {
		return u, nil
	}
	clone := r.Clone(r.Context())
	clone.Header = http.Header{}
	if pa := r.Header.Get("Proxy-Authorization"); pa != "" {
		tok, ok := bearer(pa)
		if !ok {
			tok, ok = basicPassword(pa)
		}
		if !ok {
			return nil, errors.New("Proxy-Authorization must be Bearer TOKEN or Basic with the token as password")
		}
		clone.Header.Set("Authorization", "Bearer "+tok)
	}
	u, ok, err := p.Authn.Authenticate(clone)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("proxy authentication required: send Proxy-Authorization or a client certificate")
	}
	return u, nil
}

func basicPassword(h string) (string, bool) {
	const prefix = "Basic "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return "", false
	}
	_, pw, ok := strings.Cut(string(b), ":")
	return pw, ok && pw != ""
}

// refuse answers with code and msg as both the reason phrase and the body,
// since CONNECT clients usually show only the status line.
func (p *ConnectProxy) refuse(w http.ResponseWriter, code int, msg string) {
	phrase := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, msg)
	if len(phrase) > 200 {
		phrase = phrase[:200]
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	defer conn.Close()
	hdr := ""
	for k, vs := range w.Header() {
		for _, v := range vs {
			hdr += k + ": " + v + "\r\n"
		}
	}
	body := msg + "\n"
	fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, phrase, hdr, len(body), body)
	_ = brw.Flush()
}

// bufferedConn reads what the server had buffered before the raw conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	c.r = nil
	return c.Conn.Read(p)
}

// CloseWrite keeps half-close working through the wrapper.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
