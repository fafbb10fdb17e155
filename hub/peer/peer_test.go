package peer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
)

// signer issues replica certificates (or, with agent set, a certificate
// that names something else) from ca.
func signer(ca *hubtest.CA, name string) Sign {
	return func(pub crypto.PublicKey, validity time.Duration) ([]byte, error) {
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{
			SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(validity),
			Subject:     pkix.Name{CommonName: identity.ReplicaCNPrefix + name},
			URIs:        []*url.URL{identity.ReplicaURI(name)},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
		return hubtest.CertPEM(der), err
	}
}

// replica is one hub replica's session side: registry, dialer, peers.
type replica struct {
	name     string
	sessions *session.Registry
	dialer   *session.Dialer
	peers    *Manager
	metrics  *prometheus.Registry
	addr     string
}

func newReplica(t *testing.T, ca *hubtest.CA, name string) *replica {
	log := testutil.Logger(t).Named(name)
	reg := prometheus.NewRegistry()
	tm := session.NewMetrics(reg)
	r := &replica{name: name, metrics: reg, sessions: session.NewRegistry(log, tm)}
	id, err := NewIdentity(name, func() *x509.CertPool { return ca.Pool }, signer(ca, name), time.Hour, log)
	require.NoError(t, err)
	r.peers, err = NewManager(Config{Self: name, Identity: id, Sessions: r.sessions, Tunnel: tunnel.DefaultConfig(), Log: log})
	require.NoError(t, err)
	r.dialer = session.NewDialer(r.sessions, r.peers, tm, hubtest.WaitBound)
	mux := http.NewServeMux()
	mux.Handle(Path, r.peers)
	// Not httptest's StartTLS: it would put its own certificate first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: mux, ErrorLog: log.StandardLogger(nil)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, id.ServerTLS()))
	}()
	t.Cleanup(func() {
		r.peers.CloseAll()
		_ = srv.Close()
		<-done
	})
	r.addr = ln.Addr().String()
	testutil.Background(t, name+" peers", hubtest.WaitBound, r.peers.Run)
	return r
}

// agent connects an agent of cluster to r whose member answers with its
// replica's name.
func (r *replica) agent(t *testing.T, cluster string) {
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, cluster+" via agent on "+r.name+" as "+req.Header.Get("Impersonate-User"))
	})))
	_, remove, err := r.sessions.Add(cluster, hubSide, session.Agent{})
	require.NoError(t, err)
	t.Cleanup(remove)
}

func get(t *testing.T, d *session.Dialer, cluster string) (string, error) {
	route, err := d.Route(cluster)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+cluster+"/api", nil)
	req.Header.Set("Impersonate-User", "alice")
	resp, err := d.HTTP(route).RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestForwardToTheReplicaThatHoldsTheCluster(t *testing.T) {
	ca := hubtest.NewCA(t, "hub CA")
	a, b := newReplica(t, ca, "hub-a"), newReplica(t, ca, "hub-b")
	b.agent(t, "edge")
	members := []Member{{Name: "hub-a", Address: a.addr}, {Name: "hub-b", Address: b.addr, Clusters: []string{"edge", "gone"}}}
	a.peers.Update(members)
	b.peers.Update(members)
	require.Eventually(t, func() bool { return len(a.peers.Connected()) == 1 && len(b.peers.Connected()) == 1 },
		hubtest.WaitBound, 10*time.Millisecond, "a dials b (its name sorts first)")
	assert.Equal(t, 2, a.dialer.Replicas())
	assert.True(t, a.dialer.Connected("edge"))

	body, err := get(t, a.dialer, "edge")
	require.NoError(t, err)
	assert.Equal(t, "edge via agent on hub-b as alice", body, "the caller's identity travels unchanged")
	body, err = get(t, a.dialer, "edge")
	require.NoError(t, err, "a second request reuses the pooled forwarded stream")
	assert.Contains(t, body, "hub-b")
	assert.Equal(t, 1.0, hubtest.Counter(t, b.metrics, "backhaul_hub_streams_opened_total", map[string]string{"kind": "apiserver"}),
		"one stream from b to the agent carried both requests")

	// The directory may be behind: b no longer holds "gone".
	_, err = get(t, a.dialer, "gone")
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, tunnel.CodeUnavailable, de.Code)
}

func TestPeersTrustOnlyReplicaCertificates(t *testing.T) {
	ca := hubtest.NewCA(t, "hub CA")
	a := newReplica(t, ca, "hub-a")
	for _, cert := range []tls.Certificate{ca.ClientCert(t, "mallory", "system:masters"), hubtest.NewCA(t, "other").ClientCert(t, "x")} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool, InsecureSkipVerify: true}}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + a.addr + Path)
		if err == nil {
			assert.Equal(t, http.StatusForbidden, resp.StatusCode)
			_ = resp.Body.Close()
		} else {
			assert.True(t, strings.Contains(err.Error(), "certificate"), err.Error())
		}
		tr.CloseIdleConnections()
	}
}

// What CONNECT opens — a TCP dial by the agent, and the API server as a
// raw byte stream for upgrades — is carried A→B as it is: same kind, same
// address, bytes both ways.
func TestForwardCarriesRawStreams(t *testing.T) {
	ca := hubtest.NewCA(t, "hub CA")
	a, b := newReplica(t, ca, "hub-a"), newReplica(t, ca, "hub-b")
	seen := make(chan tunnel.Request, 2)
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, func(_ context.Context, in *tunnel.Incoming) {
		seen <- in.Request
		c, err := in.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	// A node-mode agent: CONNECT IP:PORT reaches a node it advertised.
	_, remove, err := b.sessions.Add("edge", hubSide, session.Agent{Node: "n1", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
	require.NoError(t, err)
	t.Cleanup(remove)
	members := []Member{{Name: "hub-a", Address: a.addr}, {Name: "hub-b", Address: b.addr, Clusters: []string{"edge"}}}
	a.peers.Update(members)
	b.peers.Update(members)
	require.Eventually(t, func() bool { return a.dialer.Connected("edge") }, hubtest.WaitBound, 10*time.Millisecond)

	for _, req := range []tunnel.Request{
		{Kind: tunnel.KindTCP, Address: "10.0.0.7:10250", RequestID: "r1"},
		{Kind: tunnel.KindAPIServerTCP, RequestID: "r2"},
	} {
		route, err := a.dialer.Route("edge")
		require.NoError(t, err)
		c, err := a.dialer.Open(t.Context(), route, req)
		require.NoError(t, err, "%v", req.Kind)
		_, err = io.WriteString(c, "ping "+req.RequestID)
		require.NoError(t, err)
		buf := make([]byte, len("ping ")+len(req.RequestID))
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		assert.Equal(t, "ping "+req.RequestID, string(buf))
		require.NoError(t, c.Close())
		got := <-seen
		assert.Equal(t, req.Kind, got.Kind)
		assert.Equal(t, req.Address, got.Address, "the agent dials what the caller asked, not a peer's idea of it")
		assert.Equal(t, req.RequestID, got.RequestID, "the request id joins both replicas' logs and the agent's")
	}
	route, err := a.dialer.Route("edge")
	require.NoError(t, err)
	_, err = a.dialer.Open(t.Context(), route, tunnel.Request{Kind: tunnel.KindTCP, Address: "10.0.0.8:10250"})
	require.Error(t, err, "the replica holding the session checks the node route, forwarded or not")
	assert.Empty(t, seen, "the agent was not asked")
}

// nodeAgent connects a node-mode agent of cluster to r advertising addr,
// whose node answers each stream with the cluster's name.
func (r *replica) nodeAgent(t *testing.T, cluster string, addr netip.Addr) {
	hubSide, agentSide := hubtest.PipeSessions(t)
	hubtest.ServeAgent(t, agentSide, func(_ context.Context, in *tunnel.Incoming) {
		c, err := in.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, cluster+" "+in.Request.Address)
	})
	_, remove, err := r.sessions.Add(cluster, hubSide, session.Agent{Node: cluster + "-node", Addresses: []netip.Addr{addr}})
	require.NoError(t, err)
	t.Cleanup(remove)
}

// Two sites whose agents sit on different replicas advertise the same
// node address. Through the directory each replica routes a cluster's
// address to that cluster's agent only, knows the bare address is
// ambiguous, and the replica holding a session refuses a forwarded stream
// for a cluster whose agent there did not advertise the address.
func TestPeerNodeRoutesArePerCluster(t *testing.T) {
	ca := hubtest.NewCA(t, "hub CA")
	a, b, c := newReplica(t, ca, "hub-a"), newReplica(t, ca, "hub-b"), newReplica(t, ca, "hub-c")
	ip := netip.MustParseAddr("10.0.0.5")
	b.nodeAgent(t, "site-b", ip)
	c.nodeAgent(t, "site-c", ip)
	members := []Member{
		{Name: "hub-a", Address: a.addr},
		{Name: "hub-b", Address: b.addr, Clusters: []string{"site-b"}, Nodes: map[string][]string{"site-b": {"10.0.0.5"}}},
		{Name: "hub-c", Address: c.addr, Clusters: []string{"site-c"}, Nodes: map[string][]string{"site-c": {"10.0.0.5", "not-an-address"}}},
	}
	for _, r := range []*replica{a, b, c} {
		r.peers.Update(members)
	}
	require.Eventually(t, func() bool { return len(a.peers.Connected()) == 2 }, hubtest.WaitBound, 10*time.Millisecond)
	assert.Equal(t, []string{"site-b", "site-c"}, a.dialer.NodeClusters(ip))

	for _, tc := range []struct{ cluster, via string }{{"site-b", "hub-b"}, {"site-c", "hub-c"}} {
		t.Run(tc.cluster, func(t *testing.T) {
			route, err := a.dialer.NodeRoute(tc.cluster, ip)
			require.NoError(t, err)
			assert.Equal(t, []string{tc.via}, route.Via())
			conn, err := a.dialer.Open(t.Context(), route, tunnel.Request{Kind: tunnel.KindTCP, Address: "10.0.0.5:10250"})
			require.NoError(t, err)
			defer conn.Close()
			got, err := io.ReadAll(conn)
			require.NoError(t, err)
			assert.Equal(t, tc.cluster+" 10.0.0.5:10250", string(got))
		})
	}
	_, err := a.dialer.NodeRoute("site-d", ip)
	require.ErrorIs(t, err, session.ErrNoRoute)

	// A forwarded stream names its cluster; hub-b holds no agent of
	// site-c, so it does not hand site-c's address to site-b's agent.
	_, err = b.sessions.OpenLocal(t.Context(), "site-c", tunnel.Request{Kind: tunnel.KindTCP, Address: "10.0.0.5:10250"})
	var de *tunnel.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, tunnel.CodeUnavailable, de.Code)
}
