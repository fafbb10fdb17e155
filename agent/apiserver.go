package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/kubestatus"
)

// apiProxy forwards the hub's HTTP requests to the member API server with
// the agent's own credentials. The hub has authenticated the caller and set
// Impersonate-* for them, so the member's RBAC decides what they may do.
type apiProxy struct {
	target     *url.URL
	proxy      *httputil.ReverseProxy
	denyGroups []string
	log        hclog.Logger
}

func newAPIProxy(cfg *rest.Config, denyGroups []string, log hclog.Logger) (*apiProxy, error) {
	cfg = rest.CopyConfig(cfg)
	// Upgrades (exec, attach, port-forward) need HTTP/1.1 end to end, and one
	// backend connection per tunnel stream keeps streams independent.
	cfg.NextProtos = []string{"http/1.1"}
	if cfg.Impersonate.UserName != "" || len(cfg.Impersonate.Groups) > 0 {
		return nil, fmt.Errorf("the agent's kubeconfig must not impersonate; it impersonates each hub caller itself")
	}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("member API transport: %w", err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		// rest.Config allows a bare host:port.
		u, err = url.Parse("https://" + cfg.Host)
		if err != nil {
			return nil, fmt.Errorf("member API host %q: %w", cfg.Host, err)
		}
	}
	p := &apiProxy{target: u, denyGroups: denyGroups, log: log}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = ""
		},
		Transport:     rt,
		FlushInterval: 0, // streaming responses are flushed per write regardless
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("member API request failed", "request_id", r.Header.Get("Backhaul-Request-Id"), "error", err)
			kubestatus.Write(w, http.StatusBadGateway, fmt.Sprintf("agent cannot reach its API server: %v", err))
		},
		ErrorLog: log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
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

func (p *apiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Whatever the hub sent, credentials never pass: the agent's own are used.
	for k := range r.Header {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Authorization" || ck == "Proxy-Authorization" || ck == "Cookie" || strings.HasPrefix(ck, "X-Remote-") {
			delete(r.Header, k)
		}
	}
	// Without an identity the request would run as the agent itself.
	if r.Header.Get("Impersonate-User") == "" {
		kubestatus.Write(w, http.StatusForbidden, "request carries no caller identity; the agent does not act on its own behalf")
		return
	}
	if groups := r.Header.Values("Impersonate-Group"); len(groups) > 0 {
		kept := slices.DeleteFunc(slices.Clone(groups), func(g string) bool { return slices.Contains(p.denyGroups, g) })
		if len(kept) != len(groups) {
			p.log.Debug("dropped denied groups from caller identity", "user", r.Header.Get("Impersonate-User"), "request_id", r.Header.Get("Backhaul-Request-Id"))
		}
		r.Header.Del("Impersonate-Group")
		for _, g := range kept {
			r.Header.Add("Impersonate-Group", g)
		}
	}
	p.proxy.ServeHTTP(w, r)
}
