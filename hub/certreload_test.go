package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/util/keyutil"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
)

// writeKeyPair writes cert and its key as PEM files, the key first: the
// watcher reads the pair again once both match.
func writeKeyPair(t *testing.T, cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key, err := keyutil.MarshalPrivateKeyToPEM(cert.PrivateKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, key, 0o600))
	require.NoError(t, os.WriteFile(certFile, hubtest.CertPEM(cert.Certificate[0]), 0o600))
}

// servedSerial is the serial of the certificate a new handshake sees.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// callerStatus is what a new connection presenting cert gets for path.
func callerStatus(t *testing.T, url string, roots *x509.CertPool, cert tls.Certificate) int {
	t.Helper()
	tr := &http.Transport{Proxy: noProxy, TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// The serving certificate and the client CA are rotated on disk (a
// renewed certificate, a new caller CA replacing the old) while an agent
// session and a caller are connected. New handshakes see the new
// certificate, callers of the new CA authenticate and those of the old one
// no longer do, and the agent's session stays up and keeps carrying
// requests: nothing reconnects.
func TestCertificateRotationKeepsSessions(t *testing.T) {
	serverCA := hubtest.NewCA(t, "serving CA")
	callersOld, callersNew := hubtest.NewCA(t, "callers 2025"), hubtest.NewCA(t, "callers 2026")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := serverCA.ServerCert(t)
	writeKeyPair(t, first, certFile, keyFile)
	caFile := writeFile(t, filepath.Join(dir, "client-ca.crt"), string(callersOld.PEM))

	o := NewOptions()
	o.Listen, o.AdminListen = "127.0.0.1:0", ""
	o.TLSCertFile, o.TLSKeyFile, o.ClientCAFile = certFile, keyFile, caFile
	o.AgentTokenFile = writeFile(t, filepath.Join(dir, "agents.csv"), alphaToken+",alpha\n")
	o.ReplicaName, o.ShutdownGrace, o.ShutdownDelay = "hub-test", 5*time.Second, 0
	o.certReloadEvery = 20 * time.Millisecond
	cfg, err := o.Config(context.Background(), testutil.Logger(t))
	require.NoError(t, err)
	srv, err := New(cfg)
	require.NoError(t, err)
	testutil.Background(t, "hub Run", hubtest.WaitBound, srv.Run)
	require.Eventually(t, func() bool { return srv.Addr() != nil }, hubtest.WaitBound, 5*time.Millisecond, "hub never listened")
	e := &hubEnv{ca: serverCA, srv: srv, url: "https://" + srv.Addr().String(), member: newFakeMember(t)}
	e.startAgent(t)
	session := srv.Sessions().Sessions()[0].Info().ID
	api := e.url + "/clusters/alpha/api"

	// A caller of the old CA, connected before the rotation.
	carol := callersOld.ClientCert(t, "carol")
	require.Equal(t, http.StatusOK, callerStatus(t, api, serverCA.Pool, carol))
	require.Equal(t, first.Leaf.SerialNumber.String(), servedSerial(t, srv.Addr().String(), serverCA.Pool))

	renewed := serverCA.ServerCert(t)
	writeKeyPair(t, renewed, certFile, keyFile)
	writeFile(t, caFile, string(callersNew.PEM))

	require.Eventually(t, func() bool {
		return servedSerial(t, srv.Addr().String(), serverCA.Pool) == renewed.Leaf.SerialNumber.String()
	}, hubtest.WaitBound, 10*time.Millisecond, "new handshakes never saw the renewed serving certificate")
	dave := callersNew.ClientCert(t, "dave")
	require.Eventually(t, func() bool { return callerStatus(t, api, serverCA.Pool, dave) == http.StatusOK },
		hubtest.WaitBound, 10*time.Millisecond, "a caller of the new client CA was never let in")
	assert.Equal(t, []string{"dave"}, e.member.last(t).Header.Values("Impersonate-User"))
	assert.Equal(t, http.StatusUnauthorized, callerStatus(t, api, serverCA.Pool, carol), "the old CA was taken out of the file")

	// The agent's session is the one from before the rotation.
	infos := srv.Sessions().Sessions()
	require.Len(t, infos, 1)
	assert.Equal(t, session, infos[0].Info().ID, "the agent did not reconnect")
}

// A CA bundle that does not parse (a half-written file) leaves the CAs in
// force.
func TestCAFileKeepsCAsOnBadBundle(t *testing.T) {
	ca := hubtest.NewCA(t, "callers")
	path := writeFile(t, filepath.Join(t.TempDir(), "ca.crt"), string(ca.PEM))
	applied := make(chan int, 4)
	f := newCAFile(path, 10*time.Millisecond, testutil.Logger(t), func(cas []*x509.Certificate) { applied <- len(cas) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Start(ctx) }()
	defer func() { cancel(); <-done }()

	writeFile(t, path, "-----BEGIN CERTIFICATE-----\ntruncated")
	other := hubtest.NewCA(t, "callers 2")
	writeFile(t, path, string(ca.PEM)+string(other.PEM))
	select {
	case n := <-applied:
		assert.Equal(t, 2, n, "only the whole bundle is applied")
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the new bundle was never applied")
	}
}

// /metrics says which clusters and callers are busy; anyone who reaches
// the public listener (agents, callers, the internet in front of a load
// balancer) used to read it. It is served only on the private
// --metrics-listen, which is on by default.
func TestMetricsNotOnPublicListener(t *testing.T) {
	assert.Equal(t, ":9090", NewOptions().AdminListen, "the private metrics listener is on by default")
	e := startHub(t)
	resp := e.get(t, "/metrics", nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	st := hubtest.DecodeStatus(t, resp.Header.Get("Content-Type"), body)
	assert.EqualValues(t, http.StatusNotFound, st.Code)
	// The probes stay where a kubelet may look for them.
	for _, p := range []string{"/healthz", "/readyz"} {
		assert.Equal(t, http.StatusOK, e.get(t, p, nil).StatusCode, p)
	}
	rec := httptest.NewRecorder()
	e.srv.admin.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), "backhaul_hub_sessions ")
}
