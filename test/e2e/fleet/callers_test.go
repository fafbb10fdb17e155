package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/tunnel"
)

// gatewayGet calls the gateway with a bearer token (none when empty).
func (e *environment) gatewayDo(t *testing.T, method, path, token string, hdr http.Header, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.hub.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.hubHTTP(nil).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// connectStatus sends a CONNECT for target to the hub's TCP front end.
func (e *environment) connectStatus(t *testing.T, target, token string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.hub.ConnectAddr, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if token != "" {
		req += "Proxy-Authorization: Bearer " + token + "\r\n"
	}
	_, err = c.Write([]byte(req + "\r\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

// TestCallerAuthorization: callers are host-cluster identities checked by
// TokenReview, and each cluster is an RBAC resource (get clusters/proxy):
// alice, granted f1 only, is refused f2 by the hub on both front ends.
func TestCallerAuthorization(t *testing.T) {
	e := requireEnv(t)
	alice, admin := e.tokens["alice"], e.tokens["fleet-admin"]
	const nsPath = "/api/v1/namespaces/default"

	code, body := e.gatewayDo(t, http.MethodGet, "/clusters/f1"+nsPath, alice, nil, "")
	assert.Equal(t, http.StatusOK, code, body)
	code, body = e.gatewayDo(t, http.MethodGet, "/clusters/f2"+nsPath, alice, nil, "")
	assert.Equal(t, http.StatusForbidden, code, body)
	assert.Contains(t, body, "cannot reach cluster f2")
	for _, c := range []string{"f1", "f2"} {
		code, body = e.gatewayDo(t, http.MethodGet, "/clusters/"+c+nsPath, admin, nil, "")
		assert.Equal(t, http.StatusOK, code, "fleet-admin on %s: %s", c, body)
	}

	assert.Equal(t, "HTTP/1.1 200 Connection established", e.connectStatus(t, "f1.cluster.backhaul:6443", alice))
	assert.Contains(t, e.connectStatus(t, "f2.cluster.backhaul:6443", alice), "HTTP/1.1 403")

	t.Run("status page shows only reachable clusters", func(t *testing.T) {
		seen := e.statusSessions(t, "alice")
		assert.Contains(t, seen, "f1")
		assert.NotContains(t, seen, "f2")
		assert.Contains(t, e.statusSessions(t, "fleet-admin"), "f2")
	})

	t.Run("unauthenticated", func(t *testing.T) {
		code, body := e.gatewayDo(t, http.MethodGet, "/clusters/f1"+nsPath, "", nil, "")
		assert.Equal(t, http.StatusUnauthorized, code, body)
		code, body = e.gatewayDo(t, http.MethodGet, "/clusters/f1"+nsPath, "not.a-valid-token", nil, "")
		assert.Equal(t, http.StatusUnauthorized, code, body)
		// A proxy asks for credentials with 407, as RFC 9110 has it.
		assert.Contains(t, e.connectStatus(t, "f1.cluster.backhaul:6443", ""), "HTTP/1.1 407")
		assert.Contains(t, e.connectStatus(t, "f1.cluster.backhaul:6443", "not.a-valid-token"), "HTTP/1.1 407")
		// An agent upgrade with no credentials at all.
		h := http.Header{}
		h.Set(tunnel.HeaderCluster, "f1")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := (&tunnel.Dialer{URL: e.agentURLLocal(), TLSConfig: e.hub.TLSConfig(), Header: h}).Dial(ctx)
		var he *tunnel.HandshakeError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, http.StatusUnauthorized, he.StatusCode)
	})

	t.Run("impersonation is the member's decision", func(t *testing.T) {
		// A host service account reaches members under the hub's prefix,
		// without the host's system: groups.
		user, groups := e.whoami(t, "f1", alice, nil)
		assert.Equal(t, memberAlice, user)
		assert.NotContains(t, groups, "system:serviceaccounts")
		// Its own impersonation is checked with the member, which does not
		// let alice impersonate: refused, never dropped.
		hdr := http.Header{"Impersonate-User": {"system:admin"}, "Impersonate-Group": {"system:masters"}}
		code, body := e.gatewayDo(t, http.MethodPost, "/clusters/f1/apis/authentication.k8s.io/v1/selfsubjectreviews", alice, hdr,
			`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
		assert.Equal(t, http.StatusForbidden, code, body)
		assert.Contains(t, body, `cannot impersonate resource \"users\"`)
	})
}

// agentURLLocal is the tunnel endpoint as the root namespace reaches it.
func (e *environment) agentURLLocal() string {
	return strings.Replace(e.hub.URL, "https://", "wss://", 1)
}

// whoami asks member cluster, through the gateway with token (and extra
// headers), who the caller is there: a SelfSubjectReview.
func (e *environment) whoami(t *testing.T, cluster, token string, hdr http.Header) (user string, groups []string) {
	t.Helper()
	code, body := e.gatewayDo(t, http.MethodPost, "/clusters/"+cluster+"/apis/authentication.k8s.io/v1/selfsubjectreviews", token, hdr,
		`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	require.Equal(t, http.StatusCreated, code, body)
	var ssr struct {
		Status struct {
			UserInfo struct {
				Username string   `json:"username"`
				Groups   []string `json:"groups"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &ssr))
	return ssr.Status.UserInfo.Username, ssr.Status.UserInfo.Groups
}
