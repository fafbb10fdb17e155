package frontend

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"

	"backhaul.io/backhaul/hub/auth"
)

// rewrite turns the caller's request for cluster into the member's: the
// path below /clusters/NAME, the caller's credentials and identity claims
// stripped and replaced with the identity the hub authenticated, for the
// agent to impersonate, and the request id.
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

	stripIdentity(pr.Out.Header)
	setImpersonation(pr.Out.Header, u)
	pr.Out.Header.Set("Backhaul-Request-Id", id)
}

// stripIdentity removes every header by which a caller could claim an
// identity downstream.
func stripIdentity(h http.Header) {
	for k := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Authorization" || ck == "Proxy-Authorization" || ck == "Cookie" ||
			strings.HasPrefix(ck, "Impersonate-") || strings.HasPrefix(ck, "X-Remote-") {
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
			h.Add("Impersonate-Extra-"+escapeExtraKey(k), v)
		}
	}
}

func escapeExtraKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-!#$&'*+.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
