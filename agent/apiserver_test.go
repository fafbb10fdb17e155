package agent

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

func TestAPIProxy(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		// wantCode is the status the hub sees; 200 means the member was reached.
		wantCode   int
		wantGroups []string
		wantHeader http.Header // further headers the member must see
	}{
		{
			name:     "credentials never pass",
			wantCode: http.StatusOK,
			header: http.Header{
				"Impersonate-User":    {"alice"},
				"Authorization":       {"Bearer caller-token"},
				"Proxy-Authorization": {"Basic eDp5"},
				"Cookie":              {"session=abc"},
				"X-Remote-User":       {"root"},
				"X-Remote-Group":      {"system:masters"},
			},
		},
		{
			name:     "identity passes",
			wantCode: http.StatusOK,
			header: http.Header{
				"Impersonate-User":         {"alice"},
				"Impersonate-Uid":          {"uid-1"},
				"Impersonate-Group":        {"dev", "ops"},
				"Impersonate-Extra-Scopes": {"view"},
				"Backhaul-Request-Id":      {"0123456789abcdef"},
				"Audit-Id":                 {"0123456789abcdef"}, // the member's audit joins the hub's on it
			},
			wantGroups: []string{"dev", "ops"},
			wantHeader: http.Header{
				"Impersonate-Uid":          {"uid-1"},
				"Impersonate-Extra-Scopes": {"view"},
				"Backhaul-Request-Id":      {"0123456789abcdef"},
			},
		},
		{
			name:       "denied groups are dropped, the rest kept in order",
			wantCode:   http.StatusOK,
			header:     http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"ops", "system:masters", "dev", "break-glass"}},
			wantGroups: []string{"ops", "dev"},
		},
		{
			name:     "only denied groups leaves none",
			wantCode: http.StatusOK,
			header:   http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"system:masters"}},
		},
		{
			name:     "no identity is refused",
			wantCode: http.StatusForbidden,
			header:   http.Header{"Authorization": {"Bearer caller-token"}, "Impersonate-Group": {"dev"}},
		},
		{
			name:     "empty identity is refused",
			wantCode: http.StatusForbidden,
			header:   http.Header{"Impersonate-User": {""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			member := newFakeMember(t)
			p, err := newAPIProxy(member.restConfig(), []string{"system:masters", "break-glass"}, testLogger(t))
			require.NoError(t, err)

			r := httptest.NewRequest(http.MethodGet, "http://alpha.cluster.backhaul/api/v1/namespaces?limit=5", nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, r)
			require.Equal(t, tc.wantCode, rec.Code, "body: %s", rec.Body)

			reqs := member.requests()
			if tc.wantCode != http.StatusOK {
				assert.Empty(t, reqs, "a refused request reached the member")
				var st metav1.Status
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
				assert.Equal(t, metav1.StatusReasonForbidden, st.Reason)
				return
			}
			require.Len(t, reqs, 1)
			got := reqs[0]
			assert.Equal(t, "/api/v1/namespaces", got.URL.Path)
			assert.Equal(t, "limit=5", got.URL.RawQuery)
			assert.Equal(t, []string{"Bearer " + agentSAToken}, got.Header.Values("Authorization"), "the agent's own token")
			for _, k := range []string{"Proxy-Authorization", "Cookie", "X-Remote-User", "X-Remote-Group"} {
				assert.Empty(t, got.Header.Values(k), k)
			}
			assert.Equal(t, tc.header.Values("Impersonate-User"), got.Header.Values("Impersonate-User"))
			assert.Equal(t, tc.wantGroups, got.Header.Values("Impersonate-Group"))
			for k, v := range tc.wantHeader {
				assert.Equal(t, v, got.Header.Values(k), k)
			}
		})
	}
}

// TestAPIProxyHTTP2: watches share one HTTP/2 connection to the API
// server; a short request and an upgrade (exec) go over HTTP/1.1.
func TestAPIProxyHTTP2(t *testing.T) {
	member := newFakeMember(t)
	p, err := newAPIProxy(member.restConfig(), nil, testLogger(t))
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces?watch=true", nil)
			r.Header.Set("Impersonate-User", "alice")
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, r)
			assert.Equal(t, http.StatusOK, rec.Code, "body: %s", rec.Body)
		})
	}
	wg.Wait()
	conns := map[string]bool{}
	for _, r := range member.requests() {
		assert.Equal(t, 2, r.ProtoMajor, "%s over %s", r.URL, r.Proto)
		conns[r.RemoteAddr] = true
	}
	assert.Len(t, conns, 1, "20 watches, one connection")

	// A short request goes on a kept-alive HTTP/1.1 connection.
	r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces", nil)
	r.Header.Set("Impersonate-User", "alice")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, r)
	require.Equal(t, http.StatusOK, rec.Code)
	reqs := member.requests()
	assert.Equal(t, "HTTP/1.1", reqs[len(reqs)-1].Proto, "short requests stay on HTTP/1.1")

	// httptest's recorder cannot be hijacked: serve the proxy for real.
	front := httptest.NewServer(p)
	defer front.Close()
	req, err := http.NewRequest(http.MethodPost, front.URL+"/api/v1/namespaces/default/pods/p/exec?command=sh", nil)
	require.NoError(t, err)
	req.Header.Set("Impersonate-User", "alice")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	reqs = member.requests()
	last := reqs[len(reqs)-1]
	assert.Equal(t, "HTTP/1.1", last.Proto, "upgrades go over HTTP/1.1")
}

func TestAPIProxyMemberUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	p, err := newAPIProxy(&rest.Config{Host: "https://" + addr, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, nil, testLogger(t))
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodGet, "/api", nil)
	r.Header.Set("Impersonate-User", "alice")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusBadGateway, rec.Code)
	var st metav1.Status
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	assert.EqualValues(t, http.StatusBadGateway, st.Code)
}

func TestNewAPIProxy(t *testing.T) {
	member := newFakeMember(t)
	tests := []struct {
		name    string
		mutate  func(*rest.Config)
		wantErr bool
	}{
		{name: "plain", mutate: func(*rest.Config) {}},
		{name: "bare host:port", mutate: func(c *rest.Config) { c.Host = strings.TrimPrefix(c.Host, "https://") }},
		{name: "kubeconfig that impersonates a user", mutate: func(c *rest.Config) { c.Impersonate.UserName = "admin" }, wantErr: true},
		{name: "kubeconfig that impersonates groups", mutate: func(c *rest.Config) { c.Impersonate.Groups = []string{"system:masters"} }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := member.restConfig()
			tc.mutate(cfg)
			p, err := newAPIProxy(cfg, nil, testLogger(t))
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			r := httptest.NewRequest(http.MethodGet, "/version", nil)
			r.Header.Set("Impersonate-User", "alice")
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, r)
			assert.Equal(t, http.StatusOK, rec.Code, "body: %s", rec.Body)
		})
	}
}
