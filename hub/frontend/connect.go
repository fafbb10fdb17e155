package frontend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// DefaultClusterSuffix makes "NAME.cluster.backhaul:443" name a cluster's
// API server in a CONNECT request.
const DefaultClusterSuffix = ".cluster.backhaul"

// ConnectConfig is what the CONNECT proxy needs.
type ConnectConfig struct {
	Authn     auth.Authenticator
	Admission *auth.Admission
	// Dialer opens the streams and resolves node routes (CONNECT IP:PORT).
	Dialer *session.Dialer
	// Suffix marks cluster targets: NAME+Suffix:port.
	Suffix  string
	Metrics *Metrics
	Log     hclog.Logger
	// InsecureCredentials accepts Proxy-Authorization on a plaintext
	// listener, where anyone on the path reads the token. Off, such a
	// request is refused and the caller told to use TLS.
	InsecureCredentials bool
}

// Connect is the L4 front end: an HTTP CONNECT proxy whose targets are
// clusters' API servers (CLUSTER+Suffix:PORT) and node addresses
// advertised by node-mode agents (IP:PORT). TLS stays end to end between
// the caller and the member; the hub sees neither requests nor the
// member's credentials.
type Connect struct {
	cfg ConnectConfig
	// badCredentials logs refused credentials within a limit.
	badCredentials *logging.Limited
}

// NewConnect returns the CONNECT proxy; callers authenticate with a client
// certificate or Proxy-Authorization. [Connect.ForSocket] serves a Unix
// socket whose callers the socket's permissions vouch for.
func NewConnect(cfg ConnectConfig) (*Connect, error) {
	if cfg.Authn == nil || cfg.Admission == nil || cfg.Dialer == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, errors.New("connect: Authn, Admission, Dialer, Metrics and Log are required")
	}
	if !strings.HasPrefix(cfg.Suffix, ".") || len(cfg.Suffix) < 2 {
		return nil, fmt.Errorf("connect: cluster suffix %q must start with a dot", cfg.Suffix)
	}
	return &Connect{cfg: cfg, badCredentials: logging.NewLimited(cfg.Log, time.Second, 20)}, nil
}

// ServeHTTP serves CONNECT for callers who authenticate.
func (p *Connect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.isConnect(w, r) {
		return
	}
	user, err := p.authenticate(r)
	if err != nil {
		p.refuseAuth(w, err)
		return
	}
	p.serve(w, r, user)
}

// ForSocket serves CONNECT with every caller acting as user: on a Unix
// socket, file permissions are the authentication (kube-apiserver's egress
// selector sends no credentials there).
func (p *Connect) ForSocket(user *auth.User) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.isConnect(w, r) {
			p.serve(w, r, user)
		}
	})
}

func (p *Connect) isConnect(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodConnect {
		refuseConnect(w, http.StatusMethodNotAllowed, "this is a CONNECT proxy; use the gateway at /clusters/NAME/ for requests")
		return false
	}
	return true
}

// serve admits user's CONNECT, opens the stream and splices it to the
// caller's connection.
func (p *Connect) serve(w http.ResponseWriter, r *http.Request, user *auth.User) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || host == "" || port == "" {
		refuseConnect(w, http.StatusBadRequest, fmt.Sprintf("CONNECT target %q is not host:port", r.Host))
		return
	}
	route, req, ref := p.admit(r.Context(), user, host, r.Host)
	if ref != nil {
		retryAfter(w, ref.RetryAfter)
		p.refuse(w, ref.Code, ref.Reason, ref.Message)
		return
	}
	req.RequestID = newRequestID()
	stream, err := p.cfg.Dialer.Open(r.Context(), route, req)
	if err != nil {
		code, reason, msg := classify(route.Cluster(), err)
		p.cfg.Log.Info("CONNECT failed", "cluster", route.Cluster(), "target", r.Host, "user", user.Name, "request_id", req.RequestID, "code", code, "error", err)
		p.refuse(w, code, reason, msg)
		return
	}
	p.cfg.Log.Debug("CONNECT established", "cluster", route.Cluster(), "via", route.Via(), "user", user.Name, "request_id", req.RequestID)
	splice(w, r, stream)
}

// admit resolves a CONNECT host and admits user to it: CLUSTER+Suffix
// names a cluster's API server; an IP address goes to the node-mode agent
// that advertised it.
func (p *Connect) admit(ctx context.Context, user *auth.User, host, hostport string) (*session.Route, tunnel.Request, *auth.Refusal) {
	if ip, err := netip.ParseAddr(host); err == nil {
		req := tunnel.Request{Kind: tunnel.KindTCP, Address: hostport}
		if why := session.Unroutable(ip); why != "" {
			return nil, req, &auth.Refusal{Code: http.StatusForbidden, Reason: session.ReasonForbidden, Message: fmt.Sprintf("%s is %s and is never routed", ip, why)}
		}
		routed, err := p.cfg.Dialer.NodeRoute(ip)
		if err != nil {
			return nil, req, &auth.Refusal{Code: http.StatusNotFound, Reason: session.ReasonNoRoute, Message: fmt.Sprintf("no route to %s: %v", hostport, err)}
		}
		route, ref := p.cfg.Admission.AdmitRoute(ctx, user, routed)
		return route, req, ref
	}
	req := tunnel.Request{Kind: tunnel.KindAPIServerTCP}
	name, ok := strings.CutSuffix(strings.ToLower(host), p.cfg.Suffix)
	if !ok || len(validation.IsDNS1123Label(name)) > 0 {
		return nil, req, &auth.Refusal{Code: http.StatusNotFound, Reason: session.ReasonUnknownCluster,
			Message: fmt.Sprintf("no route to %s: targets are CLUSTER%s:PORT or a node IP:PORT", hostport, p.cfg.Suffix)}
	}
	route, ref := p.cfg.Admission.Admit(ctx, user, name)
	return route, req, ref
}

// refuseAuth answers a caller without valid credentials: 407, or 503 when
// the host cluster could not say.
func (p *Connect) refuseAuth(w http.ResponseWriter, err error) {
	if errors.Is(err, auth.ErrUnavailable) {
		retryAfter(w, time.Second)
		p.cfg.Log.Warn("authentication unavailable", "error", err)
		p.refuse(w, http.StatusServiceUnavailable, session.ReasonUnauthorized, "cannot authenticate now: the hub's host cluster is unavailable")
		return
	}
	msg := err.Error() // how to send credentials, ours to say
	if errors.Is(err, auth.ErrBadCredentials) {
		// Why they are bad (the host's TokenReview error) is for the
		// operator, within a limit: anyone can cause it.
		msg = "invalid credentials"
		p.badCredentials.Warn("caller not authenticated", "error", err)
	}
	w.Header().Set("Proxy-Authenticate", `Basic realm="backhaul", Bearer realm="backhaul"`)
	p.refuse(w, http.StatusProxyAuthRequired, session.ReasonUnauthorized, msg)
}

func (p *Connect) refuse(w http.ResponseWriter, code int, reason, msg string) {
	p.cfg.Metrics.refused(reason)
	refuseConnect(w, code, msg)
}

// splice hands the caller's connection to stream: 200, then bytes both
// ways until either side closes.
func splice(w http.ResponseWriter, r *http.Request, stream net.Conn) {
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = stream.Close()
		refuseConnect(w, http.StatusInternalServerError, "cannot take over the connection")
		return
	}
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = client.Close()
		_ = stream.Close()
		return
	}
	// Bytes the client sent after the CONNECT header (a TLS ClientHello,
	// say) may already sit in the server's read buffer; bufferedConn
	// delivers them first.
	tunnel.Pipe(context.WithoutCancel(r.Context()), &bufferedConn{Conn: client, r: brw.Reader}, stream)
}
