package hub

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On --connect-tls, a client certificate authenticates the caller (the
// egress selector's TCP+mTLS transport), and TLS to the member runs inside
// the CONNECT tunnel end to end.
func TestConnectTLSClientCertificate(t *testing.T) {
	env := startHub(t)
	env.startAgent(t)
	require.Eventually(t, func() bool { return env.srv.ConnectAddr() != nil }, hubtest.WaitBound, 5*time.Millisecond)
	client := env.ca.ClientCert(t, "system:egress", "cloud")

	dial := func(certs []tls.Certificate) (*tls.Conn, *bufio.Reader, *http.Response) {
		c, err := tls.Dial("tcp", env.srv.ConnectAddr().String(), &tls.Config{RootCAs: env.ca.Pool, Certificates: certs, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(hubtest.WaitBound))
		fmt.Fprintf(c, "CONNECT alpha.cluster.backhaul:443 HTTP/1.1\r\nHost: alpha.cluster.backhaul:443\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		require.NoError(t, err)
		return c, br, resp
	}

	_, _, resp := dial(nil)
	assert.Equal(t, http.StatusProxyAuthRequired, resp.StatusCode, "no certificate, no credentials")

	c, br, resp := dial([]tls.Certificate{client})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Zero(t, br.Buffered())
	// TLS with the member, inside the tunnel: the hub never sees it.
	pool := x509.NewCertPool()
	pool.AddCert(env.member.srv.Certificate())
	inner := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "example.com", MinVersion: tls.VersionTLS12})
	require.NoError(t, inner.Handshake())
	fmt.Fprintf(inner, "GET /version HTTP/1.1\r\nHost: member\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", "member-credential")
	mresp, err := http.ReadResponse(bufio.NewReader(inner), nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, mresp.Body)
	_ = mresp.Body.Close()
	got := env.member.last(t)
	assert.Equal(t, "Bearer member-credential", got.Header.Get("Authorization"), "the member sees the caller's own credentials")
	assert.Empty(t, got.Header.Get("Impersonate-User"), "passthrough adds no identity")
}
