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

	"backhaul.io/backhaul/hub/audit"
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
	Suffix string
	// Limits, when set, bounds the streams callers hold (limits.go).
	Limits *Limits
	// Audit, when set, records every CONNECT, refusals included.
	Audit   *audit.Logger
	Metrics *Metrics
	Log     hclog.Logger
	// RecordingRequired refuses CONNECT to clusters' API servers: TLS is
	// end to end there, so an exec through it could not be recorded, and
	// --recording=required promises that none goes unrecorded. Node
	// addresses stay open (kube-apiserver's egress selector, allowlisted
	// services).
	RecordingRequired bool
	// InsecureCredentials accepts Proxy-Authorization on a plaintext
	// listener, where anyone on the path reads the token. Off, such a
	// request is refused and the caller told to use TLS.
	InsecureCredentials bool
}

// Connect is the L4 front end: an HTTP CONNECT proxy whose targets are
// clusters' API servers (CLUSTER+Suffix:PORT) and node addresses
// advertised by node-mode agents (IP.node.CLUSTER+Suffix:PORT, or a bare
// IP:PORT; see parseTarget). TLS stays end to end between the caller and
// the member; the hub sees neither requests nor the member's credentials.
type Connect struct {
	cfg ConnectConfig
	// badCredentials logs refused credentials within a limit.
	badCredentials *logging.Limited
	// ambiguous logs bare node addresses that several clusters advertise,
	// within a limit: any caller can ask for one.
	ambiguous *logging.Limited
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
	return &Connect{cfg: cfg, badCredentials: logging.NewLimited(cfg.Log, time.Second, 20), ambiguous: logging.NewLimited(cfg.Log, time.Second, 20)}, nil
}

// ServeHTTP serves CONNECT for callers who authenticate.
func (p *Connect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newRequestID()
	ar := p.audit(r, id, audit.FrontEndConnect)
	defer func() { ar.End(recover()) }()
	if !p.isConnect(w, r, ar) {
		return
	}
	user, err := p.authenticate(r)
	if err != nil {
		p.refuseAuth(w, ar, err)
		return
	}
	ar.Authenticated(user)
	p.serve(w, r, ar, id, user, "")
}

// ForSocket serves CONNECT with every caller acting as user: on a Unix
// socket, file permissions are the authentication (kube-apiserver's egress
// selector sends no credentials there).
func (p *Connect) ForSocket(user *auth.User) http.Handler {
	return p.ForClusterSocket(user, "")
}

// ForClusterSocket is ForSocket for a socket of one cluster: a bare
// IP:PORT is that cluster's node address, whoever else advertises it, and
// targets of other clusters are refused. kube-apiserver's egress selector
// sends a node's IP:PORT and cannot name a cluster; the socket it is
// given does. An empty cluster is the shared socket.
func (p *Connect) ForClusterSocket(user *auth.User, cluster string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		ar := p.audit(r, id, audit.FrontEndConnectSocket)
		defer func() { ar.End(recover()) }()
		if p.isConnect(w, r, ar) {
			ar.Authenticated(user)
			p.serve(w, r, ar, id, user, cluster)
		}
	})
}

// audit starts the audit of a CONNECT, naming the cluster its target
// asks for (refused or not; a bare node address's is known once routed).
func (p *Connect) audit(r *http.Request, id, frontEnd string) *audit.Request {
	ar := p.cfg.Audit.Connect(r, id, frontEnd)
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		if t, err := parseTarget(host, p.cfg.Suffix); err == nil && t.cluster != "" {
			ar.SetCluster(t.cluster)
		}
	}
	return ar
}

// reasonBadRequest marks, in the audit log, CONNECT requests refused as
// malformed (they are not counted in backhaul_hub_errors_total).
const reasonBadRequest = "bad_request"

func (p *Connect) isConnect(w http.ResponseWriter, r *http.Request, ar *audit.Request) bool {
	if r.Method != http.MethodConnect {
		msg := "this is a CONNECT proxy; use the gateway at /clusters/NAME/ for requests"
		ar.Refused(http.StatusMethodNotAllowed, reasonBadRequest, msg)
		refuseConnect(w, http.StatusMethodNotAllowed, msg)
		return false
	}
	return true
}

// serve admits user's CONNECT, opens the stream and splices it to the
// caller's connection. scope, when set, is the one cluster the listener
// serves; id is the request's.
func (p *Connect) serve(w http.ResponseWriter, r *http.Request, ar *audit.Request, id string, user *auth.User, scope string) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || host == "" || port == "" {
		msg := fmt.Sprintf("CONNECT target %q is not host:port", r.Host)
		ar.Refused(http.StatusBadRequest, reasonBadRequest, msg)
		refuseConnect(w, http.StatusBadRequest, msg)
		return
	}
	route, req, ref := p.admit(r.Context(), user, scope, host, port)
	if route != nil {
		ar.SetCluster(route.Cluster())
	}
	release, ref := p.cfg.Limits.admit(frontEndConnect, user, route, ref)
	defer release() // splice returns when the tunnel closes
	if ref != nil {
		retryAfter(w, ref.RetryAfter)
		p.refuse(w, ar, ref.Code, ref.Reason, ref.Message)
		return
	}
	req.RequestID = id
	stream, err := p.cfg.Dialer.Open(r.Context(), route, req)
	if err != nil {
		code, reason, msg := classify(route.Cluster(), err)
		p.cfg.Log.Info("CONNECT failed", "cluster", route.Cluster(), "target", r.Host, "user", user.Name, "request_id", req.RequestID, "code", code, "error", err)
		p.refuse(w, ar, code, reason, msg)
		return
	}
	p.cfg.Log.Debug("CONNECT established", "cluster", route.Cluster(), "via", route.Via(), "user", user.Name, "request_id", req.RequestID)
	splice(w, r, ar, stream)
}

// admit resolves a CONNECT host (parseTarget) and admits user to it. A
// node address is looked up only within its cluster, and only once user
// may reach that cluster, so the answer says nothing about clusters the
// caller may not reach. scope, when set, is the only cluster allowed.
func (p *Connect) admit(ctx context.Context, user *auth.User, scope, host, port string) (*session.Route, tunnel.Request, *auth.Refusal) {
	hostport := net.JoinHostPort(host, port)
	t, err := parseTarget(host, p.cfg.Suffix)
	if err != nil {
		return nil, tunnel.Request{}, &auth.Refusal{Code: http.StatusNotFound, Reason: session.ReasonUnknownCluster,
			Message: fmt.Sprintf("no route to %s: targets are CLUSTER%[2]s:PORT, IP.%[3]s.CLUSTER%[2]s:PORT (IP as 10-0-0-5 or fd00--5) or a node IP:PORT", hostport, p.cfg.Suffix, NodeLabel)}
	}
	if !t.node() {
		if ref := p.inScope(scope, t.cluster, hostport); ref != nil {
			return nil, tunnel.Request{}, ref
		}
		if p.cfg.RecordingRequired {
			return nil, tunnel.Request{}, &auth.Refusal{Code: http.StatusForbidden, Reason: session.ReasonForbidden,
				Message: fmt.Sprintf("this hub records every exec and attach (--recording=required), which it cannot do through CONNECT: use the gateway at /clusters/%s/ for cluster %[1]s's API server", t.cluster)}
		}
		route, ref := p.cfg.Admission.Admit(ctx, user, t.cluster)
		return route, tunnel.Request{Kind: tunnel.KindAPIServerTCP}, ref
	}
	req := tunnel.Request{Kind: tunnel.KindTCP, Address: net.JoinHostPort(t.addr.String(), port)}
	if why := session.Unroutable(t.addr); why != "" {
		return nil, req, &auth.Refusal{Code: http.StatusForbidden, Reason: session.ReasonForbidden, Message: fmt.Sprintf("%s is %s and is never routed", t.addr, why)}
	}
	cluster := t.cluster
	switch {
	case cluster != "":
		if ref := p.inScope(scope, cluster, hostport); ref != nil {
			return nil, req, ref
		}
	case scope != "":
		cluster = scope
	default:
		var ref *auth.Refusal
		if cluster, ref = p.onlyCluster(ctx, user, t.addr, port); ref != nil {
			return nil, req, ref
		}
	}
	if _, ref := p.cfg.Admission.Admit(ctx, user, cluster); ref != nil {
		return nil, req, ref
	}
	route, err := p.cfg.Dialer.NodeRoute(cluster, t.addr)
	if err != nil {
		return nil, req, &auth.Refusal{Code: http.StatusNotFound, Reason: session.ReasonNoRoute, Message: fmt.Sprintf("no route to %s: %v", req.Address, err)}
	}
	return route, req, nil
}

// inScope refuses a target of another cluster than the listener's own.
func (p *Connect) inScope(scope, cluster, hostport string) *auth.Refusal {
	if scope == "" || cluster == scope {
		return nil
	}
	return &auth.Refusal{Code: http.StatusForbidden, Reason: session.ReasonForbidden,
		Message: fmt.Sprintf("%s is a target of cluster %s; this socket serves cluster %s only", hostport, cluster, scope)}
}

// onlyCluster is the one cluster whose agents advertised the bare node
// address addr. With none there is no route; with several, the caller
// must name the cluster: routing to any one of them (the newest claim,
// say) would let an agent of one site that advertises another's address
// capture its traffic.
func (p *Connect) onlyCluster(ctx context.Context, user *auth.User, addr netip.Addr, port string) (string, *auth.Refusal) {
	clusters := p.cfg.Dialer.NodeClusters(addr)
	switch len(clusters) {
	case 0:
		return "", &auth.Refusal{Code: http.StatusNotFound, Reason: session.ReasonNoRoute,
			Message: fmt.Sprintf("no route to %s: %v", net.JoinHostPort(addr.String(), port), session.ErrNoRoute)}
	case 1:
		return clusters[0], nil
	}
	// Name only the clusters the caller may reach: the others' names are
	// not theirs to learn.
	var reachable []string
	for _, c := range clusters {
		if p.cfg.Admission.Allowed(ctx, user, c) {
			reachable = append(reachable, c)
		}
	}
	p.ambiguous.Warn("CONNECT to a node address that several clusters advertise refused", "address", addr, "clusters", clusters, "user", user.Name)
	example, yours := "CLUSTER", ""
	if len(reachable) > 0 {
		example, yours = reachable[0], fmt.Sprintf(" (you may reach: %s)", strings.Join(reachable, ", "))
	}
	return "", &auth.Refusal{Code: http.StatusConflict, Reason: session.ReasonAmbiguousNode,
		Message: fmt.Sprintf("%s is advertised by nodes of %d clusters%s; name the cluster: %s:%s, or use that cluster's own socket (--connect-socket-dir)",
			addr, len(clusters), yours, nodeHost(addr, example, p.cfg.Suffix), port)}
}

// refuseAuth answers a caller without valid credentials: 407, or 503 when
// the host cluster could not say.
func (p *Connect) refuseAuth(w http.ResponseWriter, ar *audit.Request, err error) {
	if errors.Is(err, auth.ErrUnavailable) {
		retryAfter(w, time.Second)
		p.cfg.Log.Warn("authentication unavailable", "error", err)
		p.refuse(w, ar, http.StatusServiceUnavailable, session.ReasonUnauthorized, "cannot authenticate now: the hub's host cluster is unavailable")
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
	p.refuse(w, ar, http.StatusProxyAuthRequired, session.ReasonUnauthorized, msg)
}

// refuse answers code and msg, counts the reason and audits the refusal.
func (p *Connect) refuse(w http.ResponseWriter, ar *audit.Request, code int, reason, msg string) {
	p.cfg.Metrics.refused(reason)
	ar.Refused(code, reason, msg)
	refuseConnect(w, code, msg)
}

// splice hands the caller's connection to stream: 200, then bytes both
// ways until either side closes.
func splice(w http.ResponseWriter, r *http.Request, ar *audit.Request, stream net.Conn) {
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = stream.Close()
		msg := "cannot take over the connection"
		ar.Refused(http.StatusInternalServerError, session.ReasonBadGateway, msg)
		refuseConnect(w, http.StatusInternalServerError, msg)
		return
	}
	_ = client.SetDeadline(time.Time{})
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = client.Close()
		_ = stream.Close()
		return
	}
	ar.Started(http.StatusOK)
	stream = ar.Conn(stream)
	// Bytes the client sent after the CONNECT header (a TLS ClientHello,
	// say) may already sit in the server's read buffer; bufferedConn
	// delivers them first.
	tunnel.Pipe(context.WithoutCancel(r.Context()), &bufferedConn{Conn: client, r: brw.Reader}, stream)
}
