package hub

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

// TestCallersSpeakHTTP2: the gateway serves callers over HTTP/2, so one
// connection carries all of a client's requests and watches; the CONNECT
// listener, whose handler takes the connection over, offers only
// HTTP/1.1 even to a client that asks for h2.
func TestCallersSpeakHTTP2(t *testing.T) {
	env := startHub(t)
	env.startAgent(t)

	resp := env.get(t, "/clusters/alpha/api/v1/namespaces", bearerHeader("alice-token"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 2, resp.ProtoMajor, "gateway over HTTP/2")

	require.Eventually(t, func() bool { return env.srv.ConnectAddr() != nil }, hubtest.WaitBound, 5*time.Millisecond)
	c, err := tls.Dial("tcp", env.srv.ConnectAddr().String(), &tls.Config{RootCAs: env.ca.Pool, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "http/1.1", c.ConnectionState().NegotiatedProtocol, "CONNECT stays on HTTP/1.1")
}

// TestServingTLSOffersHTTP2: the listener's TLS offers h2 before
// http/1.1.
func TestServingTLSOffersHTTP2(t *testing.T) {
	o := NewOptions()
	c, err := o.servingTLS(&Config{})
	require.NoError(t, err)
	assert.Equal(t, []string{"h2", "http/1.1"}, c.NextProtos)
	one, err := http1Only(c).GetConfigForClient(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	assert.Equal(t, []string{"http/1.1"}, one.NextProtos)
	assert.Equal(t, []string{"h2", "http/1.1"}, c.NextProtos, "http1Only leaves the main listener's TLS alone")
}
