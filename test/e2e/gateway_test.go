package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The member's API server refuses a direct connection from the hub's
// namespace, while the same call through the hub works.
func TestMemberReachableOnlyThroughHub(t *testing.T) {
	e := requireEnv(t)
	for name, m := range e.members {
		t.Run(name, func(t *testing.T) {
			u, err := url.Parse(m.ExternalURL)
			require.NoError(t, err)
			c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
			if err == nil {
				c.Close()
			}
			require.Error(t, err, "a direct dial to %s from the hub's namespace must fail", u.Host)

			direct := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}}
			_, err = direct.Get(m.ExternalURL + "/readyz")
			require.Error(t, err)

			out := e.kubectl(t, "--context", name, "get", "--raw", "/readyz")
			assert.Equal(t, "ok", strings.TrimSpace(out))
		})
	}
}

// Gateway errors are Kubernetes Status objects with the right code.
func TestGatewayErrors(t *testing.T) {
	e := requireEnv(t)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}}
	cases := []struct {
		name    string
		cluster string
		token   string
		code    int
		message string
	}{
		{"no credentials", "m1", "", http.StatusUnauthorized, "Unauthorized"},
		{"wrong token", "m1", "not-a-real-token-at-all", http.StatusUnauthorized, "Unauthorized"},
		{"unknown cluster", "nosuch", callers["admin"].Token, http.StatusNotFound, `cluster "nosuch" not found`},
		{"known but never connected", "ghost", callers["admin"].Token, http.StatusServiceUnavailable, "cluster ghost is not connected"},
		{"member RBAC denies", "m1", callers["mallory"].Token, http.StatusForbidden, `User "mallory" cannot list resource "namespaces"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.hub.ClusterURL(tc.cluster)+"/api/v1/namespaces", nil)
			require.NoError(t, err)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			require.Equal(t, tc.code, resp.StatusCode, string(body))
			var st metav1.Status
			require.NoError(t, json.Unmarshal(body, &st), string(body))
			assert.Equal(t, "Status", st.Kind)
			assert.EqualValues(t, tc.code, st.Code)
			assert.Contains(t, st.Message, tc.message)
		})
	}
}

// RBAC is the member's: a hub caller without grants there gets the member's
// 403, and system:masters on the hub is not admin in the member until the
// member grants that user something.
func TestMemberRBACDecides(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	m := e.members["m2"]

	_, err := e.client(t, "m2", "mallory").CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	requireForbidden(t, err, "mallory")

	masters := e.client(t, "m2", "masters")
	_, err = masters.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	requireForbidden(t, err, "root-on-hub")

	// The member grants the user read access: now reads work, writes don't.
	// (No controller-manager runs, so aggregated roles such as "view" are
	// empty; grant an explicit role.)
	_, stderr, err := m.Kubectl(ctx, "create", "clusterrole", "ns-reader", "--verb=get,list", "--resource=namespaces")
	require.NoError(t, err, stderr)
	_, stderr, err = m.Kubectl(ctx, "create", "clusterrolebinding", "root-on-hub-ns-reader", "--clusterrole=ns-reader", "--user=root-on-hub")
	require.NoError(t, err, stderr)
	t.Cleanup(func() {
		_, _, _ = m.Kubectl(context.Background(), "delete", "clusterrolebinding", "root-on-hub-ns-reader")
		_, _, _ = m.Kubectl(context.Background(), "delete", "clusterrole", "ns-reader")
	})
	require.NoError(t, waitNoErr(20*time.Second, func() error {
		_, err := masters.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err
	}))
	_, err = masters.CoreV1().Namespaces().Create(ctx, nsObj("root-on-hub-was-here"), metav1.CreateOptions{})
	requireForbidden(t, err, "root-on-hub")
}

func requireForbidden(t *testing.T, err error, user string) {
	t.Helper()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "forbidden")
	assert.Contains(t, err.Error(), fmt.Sprintf("User %q", user))
}

func waitNoErr(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
