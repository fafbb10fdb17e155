package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/hashicorp/go-hclog"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/kubereq"
	"backhaul.io/backhaul/pkg/kubestatus"
)

// apiProxy forwards the hub's HTTP requests to the member API server with
// the agent's own credentials. The hub has authenticated the caller and set
// Impersonate-* for them, so the member's RBAC decides what they may do.
type apiProxy struct {
	target *url.URL
	proxy  *httputil.ReverseProxy
	// caller serves the hub's callers' requests (tunnel.KindAPIServer),
	// hub the hub's own (tunnel.KindHubAPIServer); see identity.go.
	caller, hub http.Handler
	log         hclog.Logger
}

func newAPIProxy(cfg *rest.Config, denyGroups []string, log hclog.Logger) (*apiProxy, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Impersonate.UserName != "" || len(cfg.Impersonate.Groups) > 0 {
		return nil, fmt.Errorf("the agent's kubeconfig must not impersonate; it impersonates each hub caller itself")
	}
	// Watches and other long-running requests share HTTP/2 connections
	// to the API server, as a client-go process's would: 500 watches are
	// a handful of connections (kube-apiserver allows 100 streams on
	// one), not 500.
	// Short requests stay on kept-alive HTTP/1.1 connections, which cost
	// less CPU and latency per request than Go's HTTP/2 client (measured:
	// +120 µs of agent CPU and +300 µs p50 per small GET on HTTP/2).
	// Upgrades (exec, attach, port-forward) need HTTP/1.1 anyway.
	multiplexed, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("member API transport: %w", err)
	}
	h1 := rest.CopyConfig(cfg)
	h1.NextProtos = []string{"http/1.1"}
	pooled, err := rest.TransportFor(h1)
	if err != nil {
		return nil, fmt.Errorf("member API transport: %w", err)
	}
	rt := byDuration{long: multiplexed, short: pooled}
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		// rest.Config allows a bare host:port.
		u, err = url.Parse("https://" + cfg.Host)
		if err != nil {
			return nil, fmt.Errorf("member API host %q: %w", cfg.Host, err)
		}
	}
	checks, err := newIdentityChecks(cfg, denyGroups, log)
	if err != nil {
		return nil, err
	}
	p := &apiProxy{target: u, log: log}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = ""
			// The member's kube-apiserver takes Audit-ID as its audit
			// event's auditID, so its audit log joins the hub's on the
			// request id (a hub that predates Audit-ID sends only
			// Backhaul-Request-Id).
			if id := pr.In.Header.Get(HeaderRequestID); id != "" {
				pr.Out.Header.Set(auditv1.HeaderAuditID, id)
			}
		},
		Transport:     rt,
		FlushInterval: 0, // streaming responses are flushed per write regardless
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("member API request failed", "request_id", r.Header.Get("Backhaul-Request-Id"), "error", err)
			kubestatus.Write(w, http.StatusBadGateway, fmt.Sprintf("agent cannot reach its API server: %v", err))
		},
		ErrorLog: log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	p.caller = checks.handler(p.proxy, false)
	p.hub = checks.handler(p.proxy, true)
	return p, nil
}

// hostPort is the API server's TCP address, with the scheme's default port.
func (p *apiProxy) hostPort() string {
	if p.target.Port() != "" {
		return p.target.Host
	}
	if p.target.Scheme == "http" {
		return net.JoinHostPort(p.target.Hostname(), "80")
	}
	return net.JoinHostPort(p.target.Hostname(), "443")
}

// ServeHTTP serves a caller's request (tunnel.KindAPIServer).
func (p *apiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	stripCredentials(r.Header)
	p.caller.ServeHTTP(w, r)
}

// forHub serves the hub's own requests (tunnel.KindHubAPIServer).
func (p *apiProxy) forHub() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stripCredentials(r.Header)
		p.hub.ServeHTTP(w, r)
	})
}

// stripCredentials removes whatever credentials the hub sent: the agent's
// own are used.
func stripCredentials(h http.Header) {
	for k := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Authorization" || ck == "Proxy-Authorization" || ck == "Cookie" || strings.HasPrefix(ck, "X-Remote-") {
			delete(h, k)
		}
	}
}

// byDuration sends long-running requests (watches, logs, proxies) on the
// multiplexed transport and the rest, upgrades included, on the HTTP/1.1
// one.
type byDuration struct {
	long, short http.RoundTripper
}

func (t byDuration) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Upgrade") == "" && kubereq.LongRunning(kubereq.Info(r)) {
		return t.long.RoundTrip(r)
	}
	return t.short.RoundTrip(r)
}
