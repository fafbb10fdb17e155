package frontend

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"

	"backhaul.io/backhaul/hub/auth"
	"github.com/stretchr/testify/assert"
)

func TestStripIdentity(t *testing.T) {
	h := http.Header{}
	strip := []string{
		"Authorization", "Proxy-Authorization", "Cookie",
		"Impersonate-User", "Impersonate-Uid", "Impersonate-Group", "Impersonate-Extra-Scopes",
		"Impersonate-Extra-Example.com%2fscopes", "X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Foo",
	}
	keep := []string{"Accept", "User-Agent", "Content-Type", "X-Request-Id", "Impersonation-Note", "X-Remotely"}
	for _, k := range append(append([]string{}, strip...), keep...) {
		h.Set(k, "v")
	}
	// Keys that did not go through canonicalisation must go too.
	h["impersonate-user"] = []string{"root"}
	h["x-remote-user"] = []string{"root"}
	h["authorization"] = []string{"Bearer x"}

	stripIdentity(h)
	for _, k := range strip {
		assert.Empty(t, h.Values(k), k)
	}
	for _, k := range []string{"impersonate-user", "x-remote-user", "authorization"} {
		assert.NotContains(t, h, k)
	}
	for _, k := range keep {
		assert.Equal(t, "v", h.Get(k), k)
	}
}

func TestSetImpersonation(t *testing.T) {
	tests := []struct {
		name string
		user *auth.User
		want http.Header
	}{
		{
			name: "user only",
			user: &auth.User{Name: "alice"},
			want: http.Header{"Impersonate-User": {"alice"}},
		},
		{
			name: "everything",
			user: &auth.User{
				Name: "alice", UID: "uid-1", Groups: []string{"dev", "ops"},
				Extra: map[string][]string{"example.com/scopes": {"a", "b"}, "reason": {"on call"}},
			},
			want: http.Header{
				"Impersonate-User":                       {"alice"},
				"Impersonate-Uid":                        {"uid-1"},
				"Impersonate-Group":                      {"dev", "ops"},
				"Impersonate-Extra-Example.com%2fscopes": {"a", "b"},
				"Impersonate-Extra-Reason":               {"on call"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			setImpersonation(h, tc.user)
			// Compare case-insensitively: header keys are case-insensitive
			// and Kubernetes unescapes the extra key itself.
			assert.Equal(t, canonicalLower(tc.want), canonicalLower(h))
		})
	}
}

func canonicalLower(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		out[strings.ToLower(k)] = v
	}
	return out
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name             string
		target           string
		wantPath, rawOut string
		wantQuery        string
	}{
		{name: "api path", target: "/clusters/alpha/api/v1/namespaces?limit=1", wantPath: "/api/v1/namespaces", wantQuery: "limit=1"},
		{name: "cluster root", target: "/clusters/alpha", wantPath: "/"},
		{name: "cluster root with slash", target: "/clusters/alpha/", wantPath: "/"},
		{name: "escaped path", target: "/clusters/alpha/api/v1/namespaces/a%2Fb", wantPath: "/api/v1/namespaces/a/b", rawOut: "/api/v1/namespaces/a%2Fb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodGet, tc.target, nil)
			in.SetPathValue("name", "alpha")
			in.Header.Set("Authorization", "Bearer caller")
			in.Header.Set("Impersonate-User", "root")
			in.Header.Set("Impersonate-Extra-Example.com%2fscopes", "admin")
			in.Header.Set("Backhaul-Impersonate-Group", "system:masters") // only the hub sets these
			in.Header.Set("Accept", "application/json")
			pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
			rewrite(pr, "alpha", &auth.User{Name: "alice", Groups: []string{"dev"}}, "req-1")

			assert.Equal(t, "http", pr.Out.URL.Scheme)
			assert.Equal(t, "alpha", pr.Out.URL.Host, "the host only shows in logs: the transport dials the admitted session")
			assert.Empty(t, pr.Out.Host)
			assert.Equal(t, tc.wantPath, pr.Out.URL.Path)
			assert.Equal(t, tc.rawOut, pr.Out.URL.RawPath)
			assert.Equal(t, tc.wantQuery, pr.Out.URL.RawQuery)
			assert.Empty(t, pr.Out.Header.Get("Authorization"))
			assert.Equal(t, []string{"alice"}, pr.Out.Header.Values("Impersonate-User"))
			assert.Equal(t, []string{"dev"}, pr.Out.Header.Values("Impersonate-Group"))
			assert.Equal(t, "req-1", pr.Out.Header.Get("Backhaul-Request-Id"))
			// What the caller asked to act as goes aside, for the agent to
			// check with the member; a caller cannot add to it directly.
			assert.Equal(t, []string{"root"}, pr.Out.Header.Values("Backhaul-Impersonate-User"))
			assert.Equal(t, []string{"admin"}, pr.Out.Header.Values("Backhaul-Impersonate-Extra-Example.com%2fscopes"))
			assert.Empty(t, pr.Out.Header.Values("Backhaul-Impersonate-Group"))
			assert.Equal(t, "application/json", pr.Out.Header.Get("Accept"))
		})
	}
}
