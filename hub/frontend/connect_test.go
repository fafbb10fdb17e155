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

// siteAgent is a node agent whose node answers with the site's name.
func siteAgent(site string) tunnel.Handler {
	return func(_ context.Context, in *tunnel.Incoming) {
		c, err := in.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s %s\n", site, in.Request.Kind, in.Request.Address)
		_, _ = io.Copy(c, c)
	}
}

// Two edge sites reuse 10.0.0.5. Site b's agent advertised it last (the
// newest claim, which once took every CONNECT to the address): each
// per-cluster form still reaches its own site, and the bare form, which
// cannot say which site is meant, is refused and counted rather than
// handed to either.
func TestConnectNodeAddressOfAnotherSiteIsNotCaptured(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "site-a", "site-b", "site-c")
	ip := netip.MustParseAddr("10.0.0.5")
	f.agent(t, "site-a", siteAgent("site-a"), session.Agent{Node: "a-1", Addresses: []netip.Addr{ip}})
	f.agent(t, "site-b", siteAgent("site-b"), session.Agent{Node: "b-1", Addresses: []netip.Addr{ip}})
	f.agent(t, "site-c", siteAgent("site-c"), session.Agent{})
	bearer := "Bearer alice-token"
	socket := func(cluster string) http.Handler {
		return f.connect.ForClusterSocket(&auth.User{Name: "system:egress"}, cluster)
	}

	reached := []struct {
		name, target, auth string
		handler            http.Handler
		want               string
	}{
		{"host form, site a", "10-0-0-5.node.site-a.cluster.backhaul:10250", bearer, f.connect, "site-a tcp 10.0.0.5:10250\n"},
		{"host form, site b", "10-0-0-5.node.site-b.cluster.backhaul:10250", bearer, f.connect, "site-b tcp 10.0.0.5:10250\n"},
		{"site a's socket, bare address", "10.0.0.5:10250", "", socket("site-a"), "site-a tcp 10.0.0.5:10250\n"},
		{"site b's socket, bare address", "10.0.0.5:10250", "", socket("site-b"), "site-b tcp 10.0.0.5:10250\n"},
		{"site a's socket, its own host form", "10-0-0-5.node.site-a.cluster.backhaul:10250", "", socket("site-a"), "site-a tcp 10.0.0.5:10250\n"},
		{"site a's socket, its API server", "site-a.cluster.backhaul:443", "", socket("site-a"), "site-a apiserver-tcp \n"},
		{"IPv4-mapped bare address on a socket", "[::ffff:10.0.0.5]:10250", "", socket("site-a"), "site-a tcp 10.0.0.5:10250\n"},
	}
	for _, tc := range reached {
		t.Run(tc.name, func(t *testing.T) {
			status, br, _ := rawConnect(t, tc.handler, tc.target, tc.auth)
			require.Equal(t, "200 Connection established", status)
			first, err := br.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, tc.want, first)
		})
	}

	refused := []struct {
		name, target, auth string
		handler            http.Handler
		want, metric       string
	}{
		{"bare address that two sites advertise", "10.0.0.5:10250", bearer, f.connect,
			"409 10.0.0.5 is advertised by nodes of 2 clusters (you may reach: site-a, site-b); name the cluster: 10-0-0-5.node.site-a.cluster.backhaul:10250", session.ReasonAmbiguousNode},
		{"the same on the shared socket", "10.0.0.5:10250", "", f.connect.ForSocket(alice), "409 10.0.0.5 is advertised by nodes of 2 clusters", session.ReasonAmbiguousNode},
		{"a site that did not advertise the address", "10-0-0-5.node.site-c.cluster.backhaul:10250", bearer, f.connect,
			"404 no route to 10.0.0.5:10250: cluster site-c: no agent advertises this address", session.ReasonNoRoute},
		{"site c's socket, bare address", "10.0.0.5:10250", "", socket("site-c"), "404 no route to 10.0.0.5:10250", session.ReasonNoRoute},
		{"site a's socket, site b's node", "10-0-0-5.node.site-b.cluster.backhaul:10250", "", socket("site-a"),
			"403 10-0-0-5.node.site-b.cluster.backhaul:10250 is a target of cluster site-b; this socket serves cluster site-a only", session.ReasonForbidden},
		{"site a's socket, site b's API server", "site-b.cluster.backhaul:443", "", socket("site-a"), "403 site-b.cluster.backhaul:443 is a target of cluster site-b", session.ReasonForbidden},
		{"host form of an unknown cluster", "10-0-0-5.node.site-x.cluster.backhaul:10250", bearer, f.connect, `404 cluster "site-x" not found`, session.ReasonUnknownCluster},
		{"host form of a metadata address", "169-254-169-254.node.site-a.cluster.backhaul:80", bearer, f.connect, "403 169.254.169.254 is the AWS", session.ReasonForbidden},
		{"malformed host form", "10-0-0.node.site-a.cluster.backhaul:10250", bearer, f.connect, "404 no route to 10-0-0.node.site-a.cluster.backhaul:10250: targets are", session.ReasonUnknownCluster},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			before := f.errors(t, tc.metric)
			status, _, _ := rawConnect(t, tc.handler, tc.target, tc.auth)
			assert.True(t, strings.HasPrefix(status, tc.want), "got %q, want %q", status, tc.want)
			assert.Equal(t, before+1, f.errors(t, tc.metric), "counted as %s", tc.metric)
		})
	}
}

// A caller who may reach only one of the sites learns only that one's
// name from the ambiguity.
func TestConnectAmbiguityNamesOnlyReachableClusters(t *testing.T) {
	f := newFrontEnds(t, onlyCluster("site-b"), "site-a", "site-b")
	ip := netip.MustParseAddr("10.0.0.5")
	f.agent(t, "site-a", siteAgent("site-a"), session.Agent{Addresses: []netip.Addr{ip}})
	f.agent(t, "site-b", siteAgent("site-b"), session.Agent{Addresses: []netip.Addr{ip}})
	status, _, _ := rawConnect(t, f.connect, "10.0.0.5:10250", "Bearer alice-token")
	assert.True(t, strings.HasPrefix(status, "409 "), status)
	assert.Contains(t, status, "10-0-0-5.node.site-b.cluster.backhaul:10250")
	assert.Contains(t, status, "(you may reach: site-b)")
	assert.NotContains(t, status, "site-a")
}

// onlyCluster authorizes every caller for one cluster.
type onlyCluster string

func (o onlyCluster) Authorize(_ context.Context, _ *auth.User, cluster string) (bool, string, error) {
	return cluster == string(o), "not granted", nil
}

// With --recording=required, CONNECT to a cluster's API server would carry
// exec sessions the hub cannot record (TLS is end to end): it is refused,
// saying where to go instead. Node addresses still splice.
func TestConnectRecordingRequiredRefusesAPIServers(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.connect.cfg.RecordingRequired = true
	f.agent(t, "alpha", echoAgent, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
	for _, h := range []http.Handler{f.connect, f.connect.ForSocket(alice)} {
		status, body, _ := rawConnect(t, h, "alpha.cluster.backhaul:443", "Bearer alice-token")
		assert.True(t, strings.HasPrefix(status, "403"), "got %q", status)
		msg, _ := io.ReadAll(body)
		assert.Contains(t, string(msg), "use the gateway at /clusters/alpha/")
	}
	assert.Equal(t, 2.0, f.errors(t, session.ReasonForbidden))

	status, br, _ := rawConnect(t, f.connect, "10.0.0.7:10250", "Bearer alice-token")
	require.Equal(t, "200 Connection established", status)
	first, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "tcp 10.0.0.7:10250\n", first)
}
