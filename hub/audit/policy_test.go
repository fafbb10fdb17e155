package audit

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"backhaul.io/backhaul/hub/auth"
)

// testPolicy exercises what k8s.io/apiserver's evaluator matches on:
// non-resource paths, users, groups, verbs, resources and namespaces,
// levels, and omitted stages (policy-wide and per rule).
const testPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/readyz", "/healthz*"]
- level: None
  users: ["system:serviceaccount:monitoring:prober"]
- level: None
  verbs: ["watch"]
  resources: [{group: "", resources: ["events"]}]
- level: RequestResponse
  resources: [{group: "", resources: ["secrets"]}]
- level: Metadata
  userGroups: ["break-glass"]
  omitStages: [ResponseStarted]
- level: None
  verbs: ["connect"]
  users: ["system:backhaul:uds"]
- level: Metadata
`

func TestPolicyLevels(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string // a gateway path, or "connect" for a CONNECT
		user       *auth.User
		wantStages []auditv1.Stage // nil: not recorded
	}{
		{name: "non-resource None", method: http.MethodGet, path: "/clusters/m1/readyz", user: alice},
		{name: "non-resource prefix None", method: http.MethodGet, path: "/clusters/m1/healthz/etcd", user: alice},
		{name: "user None", method: http.MethodGet, path: "/clusters/m1/api/v1/pods", user: &auth.User{Name: "system:serviceaccount:monitoring:prober"}},
		{name: "verb and resource None", method: http.MethodGet, path: "/clusters/m1/api/v1/events?watch=true", user: alice},
		{name: "the same resource listed is recorded", method: http.MethodGet, path: "/clusters/m1/api/v1/events", user: alice,
			wantStages: []auditv1.Stage{auditv1.StageResponseComplete}},
		{name: "RequestResponse records Metadata", method: http.MethodGet, path: "/clusters/m1/api/v1/namespaces/a/secrets/s", user: alice,
			wantStages: []auditv1.Stage{auditv1.StageResponseComplete}},
		{name: "a rule's own omitted stage", method: http.MethodGet, path: "/clusters/m1/api/v1/pods?watch=1", user: &auth.User{Name: "bob", Groups: []string{"break-glass"}},
			wantStages: []auditv1.Stage{auditv1.StageResponseComplete}},
		{name: "long-running gets ResponseStarted", method: http.MethodGet, path: "/clusters/m1/api/v1/pods?watch=1", user: alice,
			wantStages: []auditv1.Stage{auditv1.StageResponseStarted, auditv1.StageResponseComplete}},
		{name: "unauthenticated falls through to the catch-all", method: http.MethodGet, path: "/clusters/m1/api/v1/pods",
			wantStages: []auditv1.Stage{auditv1.StageResponseComplete}},
		{name: "CONNECT by verb and user None", method: http.MethodConnect, path: "connect", user: &auth.User{Name: "system:backhaul:uds"}},
		{name: "CONNECT of another user", method: http.MethodConnect, path: "connect", user: alice,
			wantStages: []auditv1.Stage{auditv1.StageResponseStarted, auditv1.StageResponseComplete}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, DefaultConfig(), testPolicy)
			var a *Request
			if tc.path == "connect" {
				r := httptest.NewRequest(http.MethodConnect, "http://m1.cluster.backhaul:443", nil)
				a = l.Connect(r, "id", FrontEndConnect)
			} else {
				a = l.Gateway(httptest.NewRequest(tc.method, tc.path, nil), "id", "m1")
			}
			a.Authenticated(tc.user)
			a.Started(http.StatusOK)
			a.End(nil)
			var got []auditv1.Stage
			for _, ev := range l.events(t) {
				got = append(got, ev.Stage)
				assert.Equal(t, auditv1.LevelMetadata, ev.Level, "the hub records no bodies at any level")
				assert.Nil(t, ev.RequestObject)
				assert.Nil(t, ev.ResponseObject)
			}
			assert.Equal(t, tc.wantStages, got)
		})
	}
}

// Without a policy file every request is recorded at Metadata, without
// RequestReceived; a policy that keeps RequestReceived gets it, when the
// caller is known.
func TestDefaultPolicyAndRequestReceived(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	a := l.Gateway(httptest.NewRequest(http.MethodGet, "/clusters/m1/api", nil), "id", "m1")
	a.Authenticated(alice)
	a.End(nil)
	evs := l.events(t)
	require.Len(t, evs, 1)
	assert.Equal(t, auditv1.StageResponseComplete, evs[0].Stage)

	l = newTestLog(t, DefaultConfig(), "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
	a = l.Gateway(httptest.NewRequest(http.MethodGet, "/clusters/m1/api", nil), "id", "m1")
	a.Authenticated(alice)
	a.End(nil)
	evs = l.events(t)
	require.Len(t, evs, 2)
	assert.Equal(t, auditv1.StageRequestReceived, evs[0].Stage)
	assert.Nil(t, evs[0].ResponseStatus)
	assert.Equal(t, auditv1.StageResponseComplete, evs[1].Stage)
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n"), 0o600))
	empty := filepath.Join(dir, "empty.yaml")
	require.NoError(t, os.WriteFile(empty, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\n"), 0o600))
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "default", mutate: func(*Config) {}},
		{name: "stdout", mutate: func(c *Config) { c.Path = Stdout }},
		{name: "negative rotation", mutate: func(c *Config) { c.Path, c.MaxAge = "x", -1 }, wantErr: "must not be negative"},
		{name: "no queue", mutate: func(c *Config) { c.QueueSize = 0 }, wantErr: "at least 1"},
		{name: "policy without a log", mutate: func(c *Config) { c.PolicyFile = empty }, wantErr: "needs --audit-log-path"},
		{name: "unknown level", mutate: func(c *Config) { c.Path, c.PolicyFile = "x", bad }, wantErr: "Everything"},
		{name: "no rules", mutate: func(c *Config) { c.Path, c.PolicyFile = "x", empty }, wantErr: "0 rules"},
		{name: "missing policy", mutate: func(c *Config) { c.Path, c.PolicyFile = "x", filepath.Join(dir, "none.yaml") }, wantErr: "none.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
