package statuspage

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/kubestatus"
)

// Config is what the page needs.
type Config struct {
	// Authn finds the caller; Authz says which clusters it may reach
	// (the hub's, with its review cache).
	Authn  auth.Authenticator
	Authz  auth.Authorizer
	Source Source
	// Sessions, when set, answers GET /status with Accept:
	// application/json as before the page existed: this replica's
	// sessions, one row each.
	Sessions *session.Registry
	// Replica names this replica on the page.
	Replica string
	// Refresh is the time between two snapshots of the fleet while
	// someone looks: the oldest data an open page shows.
	Refresh time.Duration
	// Poll is how often an open page asks for the fleet.
	Poll time.Duration
	// AccessTTL is how long what a caller may reach is remembered; a
	// grant or revocation shows on the page within it (plus the review
	// cache's own TTL).
	AccessTTL time.Duration
	// AccessWorkers bounds the reviews in flight for the page, all
	// callers together; AccessCallers the callers remembered.
	AccessWorkers int
	AccessCallers int
	// MaxHistory is the most clusters one history request may name.
	MaxHistory int
	// Bodies is how many compressed answers are kept (one per caller
	// identity and snapshot).
	Bodies int
	// Clock is the wall clock when nil.
	Clock   clock.Clock
	Log     hclog.Logger
	Metrics *Metrics
}

// DefaultConfig fills every setting but Authn, Authz, Source, Replica,
// Log and Metrics.
func DefaultConfig() Config {
	return Config{
		Refresh: 2 * time.Second, Poll: 5 * time.Second,
		AccessTTL: 30 * time.Second, AccessWorkers: 16, AccessCallers: 1024,
		MaxHistory: 200, Bodies: 64,
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Authn == nil || c.Authz == nil || c.Source == nil || c.Log == nil {
		errs = append(errs, errors.New("status page: Authn, Authz, Source and Log are required"))
	}
	if c.Refresh <= 0 || c.Poll <= 0 || c.AccessTTL <= 0 {
		errs = append(errs, errors.New("status page: Refresh, Poll and AccessTTL must be positive"))
	}
	if c.AccessWorkers <= 0 || c.AccessCallers <= 0 || c.MaxHistory <= 0 || c.Bodies <= 0 {
		errs = append(errs, errors.New("status page: AccessWorkers, AccessCallers, MaxHistory and Bodies must be positive"))
	}
	return errors.Join(errs...)
}

// Page serves the status page and its API.
type Page struct {
	cfg     Config
	clock   clock.Clock
	builder *builder
	access  *access
	bodies  *lru.Cache // caller key → *body
	assets  map[string]asset
}

// New builds the page; nothing is read until Run runs and someone looks.
func New(cfg Config) (*Page, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	assets, err := loadAssets()
	if err != nil {
		return nil, err
	}
	return &Page{
		cfg: cfg, clock: clk, assets: assets,
		// Builds go on while pages poll, through a missed poll or two.
		builder: newBuilder(cfg.Source, cfg.Refresh, 3*cfg.Poll, clk, cfg.Log, cfg.Metrics),
		access:  newAccess(cfg.Authz, cfg.AccessTTL, cfg.AccessWorkers, cfg.AccessCallers, clk, cfg.Metrics),
		bodies:  lru.New(cfg.Bodies),
	}, nil
}

// Run builds snapshots while the page is looked at, until ctx ends.
func (p *Page) Run(ctx context.Context) error {
	p.builder.run(ctx)
	return nil
}

// Paths the page serves.
const (
	PathPage     = "/status"
	PathAssets   = "/status/assets/"
	PathClusters = "/status/api/clusters"
	PathHistory  = "/status/api/history"
)

// Register mounts the page on mux; every path answers other methods
// with a 405 Status.
func (p *Page) Register(mux *http.ServeMux) {
	for path, h := range map[string]http.HandlerFunc{
		PathPage: p.servePage, PathAssets + "{file}": p.serveAsset,
		PathClusters: p.serveClusters, PathHistory: p.serveHistory,
	} {
		mux.Handle("GET "+path, secured(h))
		mux.Handle(path, kubestatus.MethodNotAllowed(http.MethodGet))
	}
}

// secured sets the headers every answer of the page carries: nothing
// inline and nothing from elsewhere may run, the page may not be framed,
// types are not sniffed, and nothing is kept by caches on the way.
func secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// authenticate finds the caller or answers for it: 401 without usable
// credentials, 503 when the host could not say.
func (p *Page) authenticate(w http.ResponseWriter, r *http.Request) (*auth.User, bool) {
	u, ok, err := p.cfg.Authn.Authenticate(r)
	switch {
	case errors.Is(err, auth.ErrUnavailable):
		unavailable(w, "cannot authenticate now: the hub's host cluster is unavailable")
		return nil, false
	case err != nil || !ok:
		kubestatus.Write(w, http.StatusUnauthorized, "Unauthorized")
		return nil, false
	}
	return u, true
}

func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	kubestatus.Write(w, http.StatusServiceUnavailable, msg)
}

// servePage answers GET /status: the page, or this replica's sessions as
// JSON for callers that asked for JSON before the page existed. A browser
// without credentials gets the page with 401: it asks for a token.
func (p *Page) servePage(w http.ResponseWriter, r *http.Request) {
	accept := r.Header.Get("Accept")
	u, ok, err := p.cfg.Authn.Authenticate(r)
	if errors.Is(err, auth.ErrUnavailable) {
		unavailable(w, "cannot authenticate now: the hub's host cluster is unavailable")
		return
	}
	if strings.Contains(accept, "application/json") && p.cfg.Sessions != nil {
		if err != nil || !ok {
			kubestatus.Write(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		p.serveSessions(w, r, u)
		return
	}
	code := http.StatusOK
	if err != nil || !ok {
		if !strings.Contains(accept, "text/html") {
			kubestatus.Write(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		code = http.StatusUnauthorized
	}
	p.writeAsset(w, r, "index.html", code)
}
