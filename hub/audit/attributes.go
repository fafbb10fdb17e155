package audit

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/pkg/kubereq"
)

// attributes are what the policy is evaluated against, and what the event
// says of the request.
type attributes struct {
	authorizer.AttributesRecord
	longRunning bool
}

// memberAttributes reads what r asks of cluster's API server from the path
// below /clusters/CLUSTER, as kube-apiserver's RequestInfoFactory reads it.
func memberAttributes(r *http.Request, cluster string) attributes {
	u := url.URL{Path: strings.TrimPrefix(r.URL.Path, "/clusters/"+cluster), RawQuery: r.URL.RawQuery}
	if u.Path == "" {
		u.Path = "/"
	}
	info := kubereq.Info(&http.Request{Method: r.Method, URL: &u, Header: r.Header})
	return attributes{
		AttributesRecord: authorizer.AttributesRecord{
			Verb: info.Verb, Path: info.Path, ResourceRequest: info.IsResourceRequest,
			Namespace: info.Namespace, APIGroup: info.APIGroup, APIVersion: info.APIVersion,
			Resource: info.Resource, Subresource: info.Subresource, Name: info.Name,
		},
		longRunning: kubereq.LongRunning(info),
	}
}

// connectAttributes are a CONNECT's: a non-resource request, verb
// "connect" (kube's lower-case method for non-resource requests), whose
// path is its target host:port.
func connectAttributes(r *http.Request) attributes {
	return attributes{
		AttributesRecord: authorizer.AttributesRecord{Verb: "connect", Path: r.Host},
		longRunning:      true,
	}
}

// userInfo is u as an audit event names a user, and as the policy
// matches one.
func userInfo(u *auth.User) (authnv1.UserInfo, user.Info) {
	ui := authnv1.UserInfo{Username: u.Name, UID: u.UID, Groups: u.Groups}
	if len(u.Extra) > 0 {
		ui.Extra = make(map[string]authnv1.ExtraValue, len(u.Extra))
		for k, v := range u.Extra {
			ui.Extra[k] = v
		}
	}
	return ui, &user.DefaultInfo{Name: u.Name, UID: u.UID, Groups: u.Groups, Extra: u.Extra}
}

// requestedImpersonation is who the caller asked to act as with
// Impersonate-* headers (kubectl --as), read as kube-apiserver reads them;
// nil when it asked for nobody. The member decides whether it may.
func requestedImpersonation(h http.Header) *authnv1.UserInfo {
	var ui *authnv1.UserInfo
	get := func() *authnv1.UserInfo {
		if ui == nil {
			ui = &authnv1.UserInfo{}
		}
		return ui
	}
	for k, vs := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if len(vs) == 0 {
			continue
		}
		switch {
		case ck == authnv1.ImpersonateUserHeader:
			get().Username = vs[0]
		case ck == authnv1.ImpersonateUIDHeader:
			get().UID = vs[0]
		case ck == authnv1.ImpersonateGroupHeader:
			get().Groups = append(get().Groups, vs...)
		case strings.HasPrefix(ck, authnv1.ImpersonateUserExtraHeaderPrefix):
			// As the API server reads the key: lower case, then unescaped.
			key := strings.ToLower(strings.TrimPrefix(ck, authnv1.ImpersonateUserExtraHeaderPrefix))
			if unescaped, err := url.PathUnescape(key); err == nil {
				key = unescaped
			}
			u := get()
			if u.Extra == nil {
				u.Extra = map[string]authnv1.ExtraValue{}
			}
			u.Extra[key] = append(u.Extra[key], vs...)
		}
	}
	return ui
}
