package frontend

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/hub/audit"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/recording"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/logging"
)

// GatewayConfig is what the gateway needs.
type GatewayConfig struct {
	Authn     auth.Authenticator
	Admission *auth.Admission
	Dialer    *session.Dialer
	// Mapping turns callers' host identities into members' (zero:
	// auth.DefaultMapping).
	Mapping auth.Mapping
	// Limits, when set, bounds the streams callers hold (limits.go).
	Limits *Limits
	// Audit, when set, records every request, refusals included.
	Audit   *audit.Logger
	Metrics *Metrics
	Log     hclog.Logger
	// Recorder, when set, records exec and attach sessions (upgrade.go).
	Recorder *recording.Recorder
}

// Gateway serves /clusters/{name}/<kubernetes path> through the cluster's
// tunnel, with the caller's identity for the agent to impersonate.
type Gateway struct {
	cfg      GatewayConfig
	errorLog *log.Logger
	watches  watches
	// badCredentials logs refused credentials within a limit.
	badCredentials *logging.Limited
}

// Drain ends every watch the gateway carries, now or later, cleanly at
// its next event boundary (the replica is going away; clients re-watch
// through another).
func (g *Gateway) Drain() { g.watches.drain() }

// Leaving says the replica has started to drain: a session whose member
// side breaks from now on (its agent letting go of this replica) ends with
// the drain's reason rather than a lost connection's. Nothing ends yet.
func (g *Gateway) Leaving() { g.watches.leaving.Store(true) }

// NewGateway returns the gateway; mount it at "/clusters/{name}" and
// "/clusters/{name}/{path...}".
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.Authn == nil || cfg.Admission == nil || cfg.Dialer == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, errors.New("gateway: Authn, Admission, Dialer, Metrics and Log are required")
	}
	if cfg.Mapping == (auth.Mapping{}) {
		cfg.Mapping = auth.DefaultMapping()
	}
	if err := cfg.Mapping.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return &Gateway{
		cfg:            cfg,
		errorLog:       cfg.Log.Named("reverseproxy").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
		badCredentials: logging.NewLimited(cfg.Log, time.Second, 20),
	}, nil
}

// ServeHTTP authenticates the caller, admits the request to the cluster's
// session and proxies it there. Every request, refused or not, has an id
// (Backhaul-Request-Id; the member's Audit-ID) and an audit event.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newRequestID()
	name := r.PathValue("name")
	ar := g.cfg.Audit.Gateway(r, id, name)
	defer func() { ar.End(recover()) }()
	rec := &statusRecorder{ResponseWriter: ar.ResponseWriter(w)}
	defer func() { g.cfg.Metrics.request(rec.class()) }()
	rec.Header().Set("Backhaul-Request-Id", id)

	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		g.refuse(rec, ar, http.StatusNotFound, session.ReasonUnknownCluster, fmt.Sprintf("cluster %q not found: invalid name", name))
		return
	}
	user, ok, err := g.cfg.Authn.Authenticate(r)
	if err != nil || !ok {
		g.unauthenticated(rec, ar, err)
		return
	}
	ar.Authenticated(user)
	route, ref := g.cfg.Admission.Admit(r.Context(), user, name)
	if ref == nil {
		ref = refuseUncheckedImpersonation(r, route)
	}
	release, ref := g.cfg.Limits.admit(frontEndGateway, user, route, ref)
	defer release() // after the response, a watch's or an exec's too: ServeHTTP returns then
	if ref != nil {
		retryAfter(rec, ref.RetryAfter)
		g.refuse(rec, ar, ref.Code, ref.Reason, ref.Message)
		return
	}
	rs, err := g.startRecording(r, name, user, id)
	if err != nil {
		g.refuse(rec, ar, http.StatusServiceUnavailable, ReasonRecording, whyNotRecorded)
		return
	}
	defer rs.Close()
	member := g.cfg.Mapping.Member(user)
	ar.Annotate(audit.AnnotationMemberUser, member.Name)
	g.proxy(name, route, member, id, ar, rs).ServeHTTP(rec, r.WithContext(session.WithRequestID(r.Context(), id)))
}

// proxy is the reverse proxy for one request: to cluster along route, as
// member (the caller as members see them). (One per request: it is a few
// words, and it keeps the request's route and identity out of the
// context.)
func (g *Gateway) proxy(cluster string, route *session.Route, member *auth.User, id string, ar *audit.Request, rs *recording.Session) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { rewrite(pr, cluster, member, id) },
		Transport: g.cfg.Dialer.HTTP(route),
		// 0, not -1: ReverseProxy flushes responses of unknown length
		// (watches, chunked lists) on every write anyway, and a small
		// response then goes out in one write instead of several.
		FlushInterval: 0,
		ModifyResponse: func(resp *http.Response) error {
			g.watches.wrap(resp.Request, resp)
			return rs.Tap(resp) // an exec's or attach's recording
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			code, reason, msg := classify(cluster, err)
			g.cfg.Log.Warn("gateway request failed", "cluster", cluster, "request_id", id, "code", code, "error", err)
			g.refuse(w, ar, code, reason, msg)
		},
		ErrorLog: g.errorLog,
	}
}

// unauthenticated answers a caller without valid credentials: 401, or 503
// when the host cluster could not say.
func (g *Gateway) unauthenticated(w http.ResponseWriter, ar *audit.Request, err error) {
	code, msg := http.StatusUnauthorized, "Unauthorized"
	switch {
	case errors.Is(err, auth.ErrUnavailable):
		code, msg = http.StatusServiceUnavailable, "cannot authenticate now: the hub's host cluster is unavailable"
		retryAfter(w, time.Second)
		g.cfg.Log.Warn("authentication unavailable", "error", err)
	case err != nil:
		// The detail (the host's TokenReview error, a certificate's fault)
		// is for the operator, not for whoever sent the credentials, as
		// with kube-apiserver; anyone can cause it, so the log is limited.
		g.badCredentials.Warn("caller not authenticated", "error", err)
	}
	g.refuse(w, ar, code, session.ReasonUnauthorized, msg)
}

// refuse answers a Status, counts the reason and audits the refusal.
func (g *Gateway) refuse(w http.ResponseWriter, ar *audit.Request, code int, reason, msg string) {
	g.cfg.Metrics.refused(reason)
	ar.Refused(code, reason, msg)
	kubestatus.Write(w, code, msg)
}
