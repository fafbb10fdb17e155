package agent

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/endpoints/filters/impersonation"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/tunnel"
)

// Who a request acts as in the member is decided here, in three steps:
//
//  1. The hub's Impersonate-* headers name the caller it authenticated
//     (already mapped into the member's names). Without them the agent
//     refuses: it never acts on its own behalf.
//  2. What the caller asked to act as (kubectl --as, which the hub moves to
//     Backhaul-Impersonate-*) is checked exactly as the member's own API
//     server would check it, by k8s.io/apiserver's impersonation filter
//     asking the member, with SubjectAccessReviews, whether the caller may
//     impersonate each requested user, group, uid and extra. Refused: 403
//     naming what was refused; allowed: the request acts as that identity.
//  3. The resulting identity loses the denied groups (system:masters), and
//     on a caller's stream may not be in the hub's reserved "backhaul:"
//     space: only the hub's own stream kind carries the hub's identity.
//
// The member then authorizes the request itself against that identity,
// which the agent passes on as impersonation with its own credentials.

// identityChecks is the parts of the agent's request path that decide the
// identity: the impersonation filter and what it needs.
type identityChecks struct {
	authz      authorizer.Authorizer
	denyGroups []string
	log        hclog.Logger
}

// Cache lifetimes of the member's answers to the agent's
// SubjectAccessReviews, as kube-apiserver's delegated authorization
// defaults them: a grant is reused for 10 s, a refusal for 10 s.
const (
	reviewAllowTTL = 10 * time.Second
	reviewDenyTTL  = 10 * time.Second
)

func newIdentityChecks(cfg *rest.Config, denyGroups []string, log hclog.Logger) (*identityChecks, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("member client for access reviews: %w", err)
	}
	// The member's SubjectAccessReview API through the library's webhook
	// authorizer: cached, retried with backoff, the same code path that
	// delegated authorization in kube-aggregated API servers takes.
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: cs.AuthorizationV1(),
		AllowCacheTTL:             reviewAllowTTL,
		DenyCacheTTL:              reviewDenyTTL,
		WebhookRetryBackoff:       &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 3},
	}.New()
	if err != nil {
		return nil, fmt.Errorf("member access reviews: %w", err)
	}
	return &identityChecks{authz: authz, denyGroups: denyGroups, log: log}, nil
}

// handler wraps next, which sends a request to the member as the identity
// in the request's context, with the three steps above; reserved says
// whether identities in the "backhaul:" space may pass (the hub's own
// streams only).
func (c *identityChecks) handler(next http.Handler, reserved bool) http.Handler {
	act := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := request.UserFrom(r.Context())
		if !reserved {
			if what := identity.HubOnlyIn(u.GetName(), u.GetGroups()); what != "" {
				c.log.Warn("refused a reserved identity on a caller's stream", "identity", what, "request_id", r.Header.Get(HeaderRequestID))
				kubestatus.Write(w, http.StatusForbidden, fmt.Sprintf("%s is reserved for the Backhaul hub and cannot be acted as through it", what))
				return
			}
		}
		setImpersonation(r.Header, u, c.denyGroups)
		next.ServeHTTP(w, r)
	})
	filtered := impersonation.WithImpersonation(act, c.authz, scheme.Codecs)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, ok := callerFrom(r.Header)
		if !ok {
			kubestatus.Write(w, http.StatusForbidden, "request carries no caller identity; the agent does not act on its own behalf")
			return
		}
		// The caller's own identity is not itself impersonation to check:
		// the hub authenticated it. What the caller asked for is.
		clearImpersonation(r.Header)
		for k, vs := range r.Header {
			if rest, ok := strings.CutPrefix(textproto.CanonicalMIMEHeaderKey(k), identity.HeaderImpersonatePrefix); ok {
				delete(r.Header, k)
				r.Header["Impersonate-"+rest] = vs
			}
		}
		filtered.ServeHTTP(w, r.WithContext(request.WithUser(r.Context(), caller)))
	})
}

// Features are the tunnel features this agent serves, which it announces
// on its upgrade (tunnel.HeaderAgentFeatures).
func Features() []string { return []string{tunnel.FeatureHubAPIServer, tunnel.FeatureImpersonation} }

// HeaderRequestID is the request id the hub sets on every request.
const HeaderRequestID = "Backhaul-Request-Id"

// callerFrom reads the identity the hub sent as Impersonate-* headers.
func callerFrom(h http.Header) (*user.DefaultInfo, bool) {
	name := h.Get(authenticationv1.ImpersonateUserHeader)
	if name == "" {
		return nil, false
	}
	u := &user.DefaultInfo{Name: name, UID: h.Get(authenticationv1.ImpersonateUIDHeader), Groups: h.Values(authenticationv1.ImpersonateGroupHeader)}
	for k, vs := range h {
		if enc, ok := strings.CutPrefix(textproto.CanonicalMIMEHeaderKey(k), authenticationv1.ImpersonateUserExtraHeaderPrefix); ok {
			// As the API server reads them: lower case, then unescaped.
			enc = strings.ToLower(enc)
			key, err := url.PathUnescape(enc)
			if err != nil {
				key = enc
			}
			if u.Extra == nil {
				u.Extra = map[string][]string{}
			}
			u.Extra[key] = append(u.Extra[key], vs...)
		}
	}
	return u, true
}

// clearImpersonation removes every Impersonate-* header.
func clearImpersonation(h http.Header) {
	for k := range h {
		if strings.HasPrefix(textproto.CanonicalMIMEHeaderKey(k), "Impersonate-") {
			delete(h, k)
		}
	}
}

// setImpersonation writes u, less the denied groups, as the Impersonate-*
// headers the member sees.
func setImpersonation(h http.Header, u user.Info, denyGroups []string) {
	clearImpersonation(h)
	h.Set(authenticationv1.ImpersonateUserHeader, u.GetName())
	if uid := u.GetUID(); uid != "" {
		h.Set(authenticationv1.ImpersonateUIDHeader, uid)
	}
	for _, g := range u.GetGroups() {
		if !slices.Contains(denyGroups, g) {
			h.Add(authenticationv1.ImpersonateGroupHeader, g)
		}
	}
	for k, vs := range u.GetExtra() {
		for _, v := range vs {
			h.Add(authenticationv1.ImpersonateUserExtraHeaderPrefix+identity.EscapeExtraKey(k), v)
		}
	}
}
