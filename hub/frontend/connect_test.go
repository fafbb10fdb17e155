package frontend

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
)

// echoAgent accepts every stream and echoes it, after a line naming what
// the stream asked for.
func echoAgent(_ context.Context, in *tunnel.Incoming) {
	c, err := in.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s\n", in.Request.Kind, in.Request.Address)
	_, _ = io.Copy(c, c)
}

// rawConnect sends a CONNECT for target to h and returns the status line
// and, on success, the tunnelled connection.
func rawConnect(t *testing.T, h http.Handler, target, auth string) (string, *bufio.Reader, net.Conn) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(hubtest.WaitBound))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	_, err = io.WriteString(c, req+"\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)+" ")), br, c
}

var connectRefusals = []struct {
	name, target, auth string
	authz              auth.Authorizer
	want, metric       string
}{
	{"no credentials", "alpha.cluster.backhaul:443", "", nil, "407 proxy authentication required", session.ReasonUnauthorized},
	{"bad token", "alpha.cluster.backhaul:443", "Bearer mallory", nil, "407 invalid credentials", session.ReasonUnauthorized},
	{"malformed credentials", "alpha.cluster.backhaul:443", "Digest x", nil, "407 Proxy-Authorization must be", session.ReasonUnauthorized},
	{"not host:port", "alpha.cluster.backhaul", "Bearer alice-token", nil, "400 CONNECT target", ""},
	{"not a cluster", "example.com:443", "Bearer alice-token", nil, "404 no route to example.com:443", session.ReasonUnknownCluster},
	{"unknown cluster", "gamma.cluster.backhaul:443", "Bearer alice-token", nil, `404 cluster "gamma" not found`, session.ReasonUnknownCluster},
	{"not connected", "beta.cluster.backhaul:443", "Bearer alice-token", nil, "503 cluster beta is not connected", session.ReasonNotConnected},
	{"not authorized", "alpha.cluster.backhaul:443", "Bearer alice-token", fakeAuthz{reason: "no"}, `403 user "alice" cannot reach cluster alpha`, session.ReasonForbidden},
	{"metadata address", "169.254.169.254:80", "Bearer alice-token", nil, "403 169.254.169.254 is the AWS, GCP, Azure and OpenStack metadata service", session.ReasonForbidden},
	{"no route", "10.9.9.9:10250", "Bearer alice-token", nil, "404 no route to 10.9.9.9:10250", session.ReasonNoRoute},
	{"node of a cluster the caller may not reach", "10.0.0.7:10250", "Bearer alice-token", fakeAuthz{reason: "no"}, `403 user "alice" cannot reach cluster alpha`, session.ReasonForbidden},
	{"agent refuses", "refused.cluster.backhaul:443", "Bearer alice-token", nil, "502 cluster refused: agent says refused", "refused"},
}

func TestConnectRefusals(t *testing.T) {
	for _, tc := range connectRefusals {
		t.Run(tc.name, func(t *testing.T) {
			f := refusingFrontEnds(t, tc.authz)
			f.agent(t, "alpha", echoAgent, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
			status, _, _ := rawConnect(t, f.connect, tc.target, tc.auth)
			assert.True(t, strings.HasPrefix(status, tc.want), "got %q, want %q", status, tc.want)
			if tc.metric != "" {
				assert.Equal(t, 1.0, f.errors(t, tc.metric))
			}
		})
	}
}

func TestConnectSplices(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.agent(t, "alpha", echoAgent, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
	basic := "Basic " + basicOf("alice", "alice-token")
	for _, tc := range []struct {
		name, target, auth string
		handler            http.Handler
		wantFirst          string
	}{
		{"cluster API server, bearer", "alpha.cluster.backhaul:6443", "Bearer alice-token", f.connect, "apiserver-tcp \n"},
		{"cluster API server, basic (client-go proxy-url)", "ALPHA.cluster.backhaul:443", basic, f.connect, "apiserver-tcp \n"},
		{"node address", "10.0.0.7:10250", "Bearer alice-token", f.connect, "tcp 10.0.0.7:10250\n"},
		{"unix socket caller", "alpha.cluster.backhaul:443", "", f.connect.ForSocket(&auth.User{Name: "system:egress"}), "apiserver-tcp \n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, br, c := rawConnect(t, tc.handler, tc.target, tc.auth)
			require.Equal(t, "200 Connection established", status)
			first, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, tc.wantFirst, first)
			_, err = io.WriteString(c, "ping\n")
			require.NoError(t, err)
			echo, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "ping\n", echo)
		})
	}
}

func TestConnectOnlyConnect(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	for _, h := range []http.Handler{f.connect, f.connect.ForSocket(alice)} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/clusters/alpha/api", nil))
		assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	}
}

func basicOf(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}

// A token sent to a plaintext CONNECT listener has been read by anyone on
// the path: unless the operator said that is fine, it is refused and the
// caller told to use TLS.
func TestConnectRefusesPlaintextCredentials(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.connect.cfg.InsecureCredentials = false
	f.agent(t, "alpha", echoAgent, session.Agent{})
	status, _, _ := rawConnect(t, f.connect, "alpha.cluster.backhaul:443", "Bearer alice-token")
	assert.True(t, strings.HasPrefix(status, "407 refusing Proxy-Authorization sent in plaintext"), status)
	assert.Contains(t, status, "--connect-insecure-credentials")
}
