package frontend

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/tunnel"
)

// rewrite turns the caller's request for cluster into the member's: the
// path below /clusters/NAME, the caller's credentials and identity claims
// stripped and replaced with u, the caller's identity as members see it
// (auth.Mapping), for the agent to impersonate; the impersonation the
// caller asked for itself (kubectl --as) moved aside for the agent to check
// with the member; and the request id.
func rewrite(pr *httputil.ProxyRequest, cluster string, u *auth.User, id string) {
	prefix := "/clusters/" + cluster
	pr.Out.URL.Scheme = "http"
	// The transport dials the session admission chose; the host only
	// shows in logs and errors.
	pr.Out.URL.Host = cluster
	pr.Out.Host = ""
	pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
	if pr.In.URL.RawPath != "" {
		pr.Out.URL.RawPath = strings.TrimPrefix(pr.In.URL.RawPath, prefix)
	}
	if pr.Out.URL.Path == "" {
		pr.Out.URL.Path, pr.Out.URL.RawPath = "/", ""
	}
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery

	asked := requestedImpersonation(pr.Out.Header)
	stripIdentity(pr.Out.Header)
	stripHubHeaders(pr.Out.Header)
	for k, vs := range asked {
		pr.Out.Header[k] = vs
	}
	setImpersonation(pr.Out.Header, u)
	pr.Out.Header.Set("Backhaul-Request-Id", id)
	// The member's kube-apiserver takes Audit-ID as its audit event's
	// auditID, so its audit log and the hub's join on the request id.
	pr.Out.Header.Set(headerAuditID, id)
}

// headerAuditID is kube-apiserver's (k8s.io/apiserver/pkg/apis/audit/v1
// HeaderAuditID): set by the first server to receive a request, and
// adopted by the servers it passes through.
const headerAuditID = "Audit-Id"

// stripHubHeaders removes the headers only the hub sets: Backhaul-* (the
// request id, the impersonation it moves aside) and Audit-ID, which a
// caller could otherwise use to plant an id in the member's audit log.
func stripHubHeaders(h http.Header) {
	for k := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == headerAuditID || strings.HasPrefix(ck, "Backhaul-") {
			delete(h, k)
		}
	}
}

// requestedImpersonation is the caller's Impersonate-* headers renamed to
// identity.HeaderImpersonatePrefix, which only the hub sets.
func requestedImpersonation(h http.Header) http.Header {
	var out http.Header
	for k, vs := range h {
		if rest, ok := strings.CutPrefix(textproto.CanonicalMIMEHeaderKey(k), "Impersonate-"); ok {
			if out == nil {
				out = http.Header{}
			}
			out[identity.HeaderImpersonatePrefix+rest] = vs
		}
	}
	return out
}

// stripIdentity removes every header by which a caller could claim an
// identity downstream.
func stripIdentity(h http.Header) {
	for k := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Authorization" || ck == "Proxy-Authorization" || ck == "Cookie" ||
			strings.HasPrefix(ck, "Impersonate-") || strings.HasPrefix(ck, "X-Remote-") ||
			strings.HasPrefix(ck, identity.HeaderImpersonatePrefix) {
			delete(h, k)
		}
	}
}

// setImpersonation writes u as Impersonate-* headers, escaping extra keys as
// client-go does so keys with '/' survive.
func setImpersonation(h http.Header, u *auth.User) {
	h.Set("Impersonate-User", u.Name)
	if u.UID != "" {
		h.Set("Impersonate-Uid", u.UID)
	}
	for _, g := range u.Groups {
		h.Add("Impersonate-Group", g)
	}
	for k, vs := range u.Extra {
		for _, v := range vs {
			h.Add("Impersonate-Extra-"+identity.EscapeExtraKey(k), v)
		}
	}
}

// refuseUncheckedImpersonation refuses a caller's own impersonation
// (kubectl --as) towards an agent that cannot check it with its member: an
// agent from before the check would drop it silently and answer for the
// caller, which is worse than a refusal. (On a route through a peer the
// replica does not know the far agent's features; docs/security.md says
// so for mixed-version fleets.)
func refuseUncheckedImpersonation(r *http.Request, route *session.Route) *auth.Refusal {
	if route == nil || route.Local() == nil || route.Local().Serves(tunnel.FeatureImpersonation) {
		return nil
	}
	for k := range r.Header {
		if strings.HasPrefix(textproto.CanonicalMIMEHeaderKey(k), "Impersonate-") {
			return &auth.Refusal{Code: http.StatusForbidden, Reason: session.ReasonForbidden,
				Message: fmt.Sprintf("impersonation (%s) is not supported by the agent of cluster %s: upgrade the agent", k, route.Cluster())}
		}
	}
	return nil
}
