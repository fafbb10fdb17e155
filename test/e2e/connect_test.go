package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kubectl with proxy-url pointing at the hub's CONNECT front end and the
// member's own CA and credentials reaches the member; TLS is end to end, so
// the hub logs no request path.
func TestConnectPassthroughKubectl(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	m := e.members["m2"]
	path := e.connectKubeconfig(t, "m2")
	out, err := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", path, "get", "namespaces", "kube-system", "-o", "name").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "namespace/kube-system", strings.TrimSpace(string(out)))
	// The member authenticated its own admin, not a hub caller.
	out, err = execCommand(ctx, e.bins.Kubectl, "--kubeconfig", path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Equal(t, "admin", strings.TrimSpace(string(out)))

	hubLog, err := os.ReadFile(e.hub.Process().LogPath())
	require.NoError(t, err)
	assert.NotContains(t, string(hubLog), "/api/v1/namespaces/kube-system", "the hub saw a request path through CONNECT")
	assert.NotContains(t, string(hubLog), m.AdminToken)
}

// connectKubeconfig writes a kubeconfig for cluster's own API server, as
// its own admin with its own CA, through the hub's CONNECT front end
// (proxy-url, as the fleet admin), and returns its path.
func (e *environment) connectKubeconfig(t *testing.T, cluster string) string {
	t.Helper()
	m := e.members[cluster]
	proxy := url.URL{Scheme: "http", User: url.UserPassword(callers["admin"].User, callers["admin"].Token), Host: e.hub.ConnectAddr}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: https://%[1]s.cluster.backhaul:6443
    tls-server-name: kubernetes.default.svc
    certificate-authority-data: %[2]s
    proxy-url: %[3]s
users:
- name: member-admin
  user:
    token: %[4]s
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: member-admin}
current-context: %[1]s
`, cluster, base64.StdEncoding.EncodeToString(m.CAPEM), strconv.Quote(proxy.String()), strconv.Quote(m.AdminToken))
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(kc), 0o600))
	return path
}

// rawConnect sends raw bytes to a CONNECT front end and returns the status
// line of the answer.
func rawConnect(t *testing.T, network, addr, request string) (status string, conn net.Conn) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	_, err = c.Write([]byte(request))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line), c
}

// Bad and refused CONNECTs get a clear 4xx/5xx with a reason, and the
// proxy keeps serving others.
func TestConnectRefusals(t *testing.T) {
	e := requireEnv(t)
	good := "Proxy-Authorization: Bearer " + callers["admin"].Token + "\r\n"
	cases := []struct {
		name    string
		request string
		status  string
	}{
		{"no credentials", "CONNECT m1.cluster.backhaul:443 HTTP/1.1\r\nHost: m1.cluster.backhaul:443\r\n\r\n", "HTTP/1.1 407 proxy authentication required"},
		{"wrong token", "CONNECT m1.cluster.backhaul:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer nope-nope-nope\r\n\r\n", "HTTP/1.1 407"},
		{"unknown cluster", "CONNECT nosuch.cluster.backhaul:443 HTTP/1.1\r\nHost: x\r\n" + good + "\r\n", `HTTP/1.1 404 cluster "nosuch" not found`},
		{"not a cluster target", "CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n" + good + "\r\n", "HTTP/1.1 404 no route to example.com:443"},
		{"never connected", "CONNECT ghost.cluster.backhaul:443 HTTP/1.1\r\nHost: x\r\n" + good + "\r\n", "HTTP/1.1 503 cluster ghost is not connected"},
		{"missing port", "CONNECT m1.cluster.backhaul HTTP/1.1\r\nHost: x\r\n" + good + "\r\n", "HTTP/1.1 400"},
		{"malformed request line", "CONNECT\r\n\r\n", "HTTP/1.1 400"},
		{"not CONNECT", "GET / HTTP/1.1\r\nHost: x\r\n" + good + "\r\n", "HTTP/1.1 405"},
		{"huge headers", "CONNECT m1.cluster.backhaul:443 HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "HTTP/1.1 431"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _ := rawConnect(t, "tcp", e.hub.ConnectAddr, tc.request)
			assert.True(t, strings.HasPrefix(status, tc.status), "got %q, want prefix %q", status, tc.status)
		})
	}
	// Still serving: a good CONNECT is established.
	status, _ := rawConnect(t, "tcp", e.hub.ConnectAddr, "CONNECT m1.cluster.backhaul:443 HTTP/1.1\r\nHost: x\r\n"+good+"\r\n")
	assert.Equal(t, "HTTP/1.1 200 Connection established", status)
}

// On the Unix socket (kube-apiserver's egress selector transport) callers
// are trusted by file permission, and the tunnel carries TLS to the member.
func TestConnectUnixSocket(t *testing.T) {
	e := requireEnv(t)
	m := e.members["m1"]
	status, c := rawConnect(t, "unix", e.hub.ConnectUDS, "CONNECT m1.cluster.backhaul:443 HTTP/1.1\r\nHost: m1.cluster.backhaul:443\r\n\r\n")
	require.Equal(t, "HTTP/1.1 200 Connection established", status)
	_ = c.SetDeadline(time.Time{})

	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return c, nil },
	}
	tr.TLSClientConfig = memberTLS(t, m.CAPEM)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "https://m1.cluster.backhaul/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+m.AdminToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
