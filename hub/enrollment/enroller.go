package enrollment

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/logging"
	"backhaul.io/backhaul/tunnel"
)

// Sessions counts a cluster's connected agents, for the onboarding
// script's status poll.
type Sessions interface {
	Agents(cluster string) (n int, newestVersion string)
}

// Config is what the enrollment endpoints need.
type Config struct {
	Tokens   *BootstrapTokens
	CA       *CA
	Clusters auth.ClusterUIDs
	Sessions Sessions
	// Validity of issued agent certificates; agents renew at two thirds.
	Validity time.Duration
	// Timeout bounds one request's host-cluster calls (default 10 s).
	Timeout time.Duration
	// Limits bound enroll and status requests (see Limits). Renew is not
	// limited: it needs a certificate of the hub CA, verified in the TLS
	// handshake, and refusing it costs nothing but a rate-limited log line.
	Limits  Limits
	Log     hclog.Logger
	Metrics *Metrics
	// Now is the limiters' clock (tests); default time.Now.
	Now func() time.Time
}

// Enroller serves the enrollment endpoints (see pkg/identity): a bootstrap
// token buys one certificate for its cluster; a valid certificate buys its
// successor; the token also lets the onboarding script ask whether the
// cluster's agent has connected.
type Enroller struct {
	cfg   Config
	certs *auth.AgentCerts
	limit *limiter
	// refusals logs what anyone who reaches the hub can cause, within a
	// limit: a flood of bad tokens must not become a flood of log lines.
	refusals *logging.Limited
}

// New returns the enrollment endpoints.
func New(cfg Config) (*Enroller, error) {
	if cfg.Tokens == nil || cfg.CA == nil || cfg.Clusters == nil || cfg.Sessions == nil || cfg.Log == nil || cfg.Metrics == nil {
		return nil, errors.New("enrollment: Tokens, CA, Clusters, Sessions, Log and Metrics are required")
	}
	if cfg.Validity < time.Minute {
		return nil, fmt.Errorf("enrollment: certificate validity %v is under a minute", cfg.Validity)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("enrollment: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Enroller{
		cfg: cfg, certs: &auth.AgentCerts{Roots: cfg.CA.Pool, Clusters: cfg.Clusters},
		limit: newLimiter(cfg.Limits, cfg.Now), refusals: logging.NewLimited(cfg.Log, time.Second, 20),
	}, nil
}

// Register adds the enrollment routes to mux.
func (e *Enroller) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+identity.PathEnroll, e.limited("enroll", e.enroll))
	mux.HandleFunc("POST "+identity.PathRenew, e.renew)
	mux.HandleFunc("GET "+identity.PathEnrollStatus, e.limited("status", e.status))
	mux.Handle(identity.PathEnroll, kubestatus.MethodNotAllowed(http.MethodPost))
	mux.Handle(identity.PathRenew, kubestatus.MethodNotAllowed(http.MethodPost))
	mux.Handle(identity.PathEnrollStatus, kubestatus.MethodNotAllowed(http.MethodGet))
}

// limited answers 429 with Retry-After, before anything else is read,
// when the request's source or all sources are over their limits.
func (e *Enroller) limited(kind string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := e.limit.allow(r.RemoteAddr)
		var rl *RateLimitError
		if !errors.As(err, &rl) {
			h(w, r)
			return
		}
		w.Header().Set("Retry-After", retrySeconds(rl.RetryAfter))
		e.refuse(w, r, kind, http.StatusTooManyRequests, "rate_limited_"+rl.Scope, rl)
	}
}

func (e *Enroller) enroll(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), e.cfg.Timeout)
	defer cancel()
	cluster := r.Header.Get(tunnel.HeaderCluster)
	raw, ok := auth.Bearer(r.Header.Get("Authorization"))
	if !ok || cluster == "" {
		e.refuse(w, r, "enroll", http.StatusUnauthorized, "unauthorized", errors.New("enrollment needs Authorization: Bearer <bootstrap token> and a Backhaul-Cluster header"))
		return
	}
	// Check the token before reading the CSR, consume it only after: a
	// malformed CSR must not burn the token.
	rec, err := e.cfg.Tokens.Check(ctx, raw, cluster)
	if err != nil {
		e.refuseErr(w, r, "enroll", err)
		return
	}
	csr, err := readCSR(r)
	if err != nil {
		e.refuseErr(w, r, "enroll", err)
		return
	}
	uid, ok := e.cfg.Clusters.UID(cluster)
	if !ok {
		e.refuse(w, r, "enroll", http.StatusForbidden, "forbidden", fmt.Errorf("cluster %q is not registered", cluster))
		return
	}
	if err := e.cfg.Tokens.Redeem(ctx, rec); err != nil {
		e.refuseErr(w, r, "enroll", err)
		return
	}
	e.issue(w, r, "enroll", csr, identity.AgentIdentity{Cluster: cluster, UID: uid})
}

func (e *Enroller) renew(w http.ResponseWriter, r *http.Request) {
	id, err := e.certs.Identify(r)
	if err != nil {
		e.refuseErr(w, r, "renew", err)
		return
	}
	csr, err := readCSR(r)
	if err != nil {
		e.refuseErr(w, r, "renew", err)
		return
	}
	e.issue(w, r, "renew", csr, id)
}

func (e *Enroller) issue(w http.ResponseWriter, r *http.Request, kind string, csr *x509.CertificateRequest, id identity.AgentIdentity) {
	certPEM, err := e.cfg.CA.SignAgent(csr, id, e.cfg.Validity)
	if err != nil {
		e.refuse(w, r, kind, http.StatusInternalServerError, "error", err)
		return
	}
	e.cfg.Metrics.request(kind, "ok")
	e.cfg.Log.Info("issued agent certificate", "kind", kind, "cluster", id.Cluster, "remote", r.RemoteAddr, "validity", e.cfg.Validity)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(identity.EnrollResponse{Certificate: string(certPEM), CA: string(e.cfg.CA.PEM())})
}

func (e *Enroller) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), e.cfg.Timeout)
	defer cancel()
	raw, ok := auth.Bearer(r.Header.Get("Authorization"))
	if !ok {
		e.refuse(w, r, "status", http.StatusUnauthorized, "unauthorized", errors.New("send Authorization: Bearer <bootstrap token>"))
		return
	}
	cluster, err := e.cfg.Tokens.Lookup(ctx, raw)
	if err != nil {
		e.refuseErr(w, r, "status", err)
		return
	}
	st := identity.EnrollStatus{Cluster: cluster}
	st.Agents, st.AgentVersion = e.cfg.Sessions.Agents(cluster)
	st.Connected = st.Agents > 0
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

func readCSR(r *http.Request) (*x509.CertificateRequest, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, identity.MaxCSRBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrBadCSR, err)
	}
	return ParseCSR(body)
}

// refuseErr answers err with the status its kind calls for.
func (e *Enroller) refuseErr(w http.ResponseWriter, r *http.Request, kind string, err error) {
	switch {
	case errors.Is(err, ErrBadCSR):
		e.refuse(w, r, kind, http.StatusBadRequest, "bad_csr", err)
	case errors.Is(err, session.ErrAgentForbidden):
		e.refuse(w, r, kind, http.StatusForbidden, "forbidden", err)
	case errors.Is(err, errTokenInvalid), errors.Is(err, auth.ErrAgentAuth):
		e.refuse(w, r, kind, http.StatusUnauthorized, "unauthorized", err)
	case errors.Is(err, ErrTokensNotSynced):
		e.refuse(w, r, kind, http.StatusServiceUnavailable, "error", err)
	default:
		e.refuse(w, r, kind, http.StatusInternalServerError, "error", err)
	}
}

func (e *Enroller) refuse(w http.ResponseWriter, r *http.Request, kind string, code int, result string, err error) {
	e.cfg.Metrics.request(kind, result)
	e.refusals.Warn("refused enrollment request", "kind", kind, "cluster", r.Header.Get(tunnel.HeaderCluster), "remote", r.RemoteAddr, "code", code, "error", err)
	msg := err.Error()
	if code == http.StatusUnauthorized {
		// The log has the detail; the caller learns only that the token
		// is no good.
		msg = errTokenInvalid.Error()
		if errors.Is(err, auth.ErrAgentAuth) {
			msg = "agent certificate not accepted"
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="backhaul"`)
	}
	kubestatus.Write(w, code, msg)
}
