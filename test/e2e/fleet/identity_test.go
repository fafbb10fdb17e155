package fleet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/util/keyutil"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// hubHTTP is a client of the hub's TLS listener trusting its CA.
func (e *environment) hubHTTP(cert *tls.Certificate) *http.Client {
	cfg := e.hub.TLSConfig()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// newCSR returns a PEM CSR and the PEM key it is for.
func newCSR(t *testing.T, cn string) (csrPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	require.NoError(t, err)
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM
}

type enrollResult struct {
	code int
	body string
	resp identity.EnrollResponse
}

// enroll posts a CSR to path with a bootstrap token (or a client cert).
func (e *environment) enroll(t *testing.T, path, cluster, token string, cert *tls.Certificate, csr []byte) enrollResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.hub.URL+path, bytes.NewReader(csr))
	require.NoError(t, err)
	req.Header.Set(tunnel.HeaderCluster, cluster)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.hubHTTP(cert).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := enrollResult{code: resp.StatusCode, body: string(b)}
	if r.code == http.StatusOK {
		require.NoError(t, json.Unmarshal(b, &r.resp))
	}
	return r
}

// addCluster registers name and returns its bootstrap token; the cluster
// is removed when the test ends.
func (e *environment) addCluster(t *testing.T, name string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.ctl(ctx, append([]string{"cluster", "add", name}, extra...)...)
	require.NoError(t, err, out)
	t.Cleanup(func() { _, _ = e.ctl(context.Background(), "cluster", "remove", name) })
	oc, err := harness.ParseOnboardCommand(out)
	require.NoError(t, err)
	return oc.Token
}

// TestBootstrapTokens: a token buys one certificate for its own cluster,
// once, before it expires; a bad CSR does not spend it.
func TestBootstrapTokens(t *testing.T) {
	e := requireEnv(t)
	tok := e.addCluster(t, "x3")
	csr, key := newCSR(t, "whatever the agent asks")

	r := e.enroll(t, identity.PathEnroll, "f1", tok, nil, csr)
	assert.Equal(t, http.StatusForbidden, r.code, "a token of x3 cannot enroll f1: %s", r.body)

	for name, bad := range map[string][]byte{
		"not PEM":           []byte("hello"),
		"garbage in PEM":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("garbage")}),
		"certificate block": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
		"oversized":         bytes.Repeat([]byte("A"), identity.MaxCSRBytes+10),
		"trailing data":     append(append([]byte{}, csr...), []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")...),
	} {
		r := e.enroll(t, identity.PathEnroll, "x3", tok, nil, bad)
		assert.Equal(t, http.StatusBadRequest, r.code, "%s: %s", name, r.body)
		assert.Contains(t, r.body, `"kind":"Status"`, name)
	}

	r = e.enroll(t, identity.PathEnroll, "x3", "abcdef.0123456789abcdef", nil, csr)
	assert.Equal(t, http.StatusUnauthorized, r.code, "unknown token: %s", r.body)
	r = e.enroll(t, identity.PathEnroll, "x3", "not-a-token", nil, csr)
	assert.Equal(t, http.StatusUnauthorized, r.code, "malformed token: %s", r.body)

	r = e.enroll(t, identity.PathEnroll, "x3", tok, nil, csr)
	require.Equal(t, http.StatusOK, r.code, "the token survived the refusals above: %s", r.body)
	cert, err := tls.X509KeyPair([]byte(r.resp.Certificate), key)
	require.NoError(t, err)
	id, err := identity.AgentIdentityOf(cert.Leaf)
	require.NoError(t, err)
	assert.Equal(t, "x3", id.Cluster, "the hub, not the CSR, decides the subject")
	assert.Equal(t, identity.AgentCNPrefix+"x3", cert.Leaf.Subject.CommonName)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, cert.Leaf.ExtKeyUsage)

	r = e.enroll(t, identity.PathEnroll, "x3", tok, nil, csr)
	assert.Equal(t, http.StatusUnauthorized, r.code, "a used token is refused: %s", r.body)

	// The used token still answers the onboarding script's status poll.
	req, _ := http.NewRequest(http.MethodGet, e.hub.URL+identity.PathEnrollStatus, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.hubHTTP(nil).Do(req)
	require.NoError(t, err)
	var st identity.EnrollStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	assert.Equal(t, identity.EnrollStatus{Cluster: "x3"}, st)

	// The certificate renews itself, and nothing else can.
	csr2, _ := newCSR(t, "x")
	r = e.enroll(t, identity.PathRenew, "x3", "", &cert, csr2)
	assert.Equal(t, http.StatusOK, r.code, "renew with the certificate: %s", r.body)
	r = e.enroll(t, identity.PathRenew, "x3", "", nil, csr2)
	assert.Equal(t, http.StatusUnauthorized, r.code, "renew without a certificate: %s", r.body)

	t.Run("expired", func(t *testing.T) {
		tok := e.addCluster(t, "x4", "--token-ttl", "1s")
		time.Sleep(1500 * time.Millisecond)
		r := e.enroll(t, identity.PathEnroll, "x4", tok, nil, csr)
		assert.Equal(t, http.StatusUnauthorized, r.code, "expired token: %s", r.body)
	})

	t.Run("certificate binds its cluster", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := e.dialAs(ctx, &cert, "f1")
		var he *tunnel.HandshakeError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, http.StatusForbidden, he.StatusCode, he.Reason)
		assert.Contains(t, he.Reason, `certificate is for cluster "x3"`)
		// Its own cluster works.
		require.NoError(t, e.dialAs(ctx, &cert, "x3"))
	})

	t.Run("removal revokes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := e.dialer(&cert, "x3")
		sess, err := d.Dial(ctx)
		require.NoError(t, err)
		defer sess.Close()
		go func() { _ = sess.Serve(ctx, func(context.Context, *tunnel.Incoming) {}) }()
		out, err := e.ctl(ctx, "cluster", "remove", "x3")
		require.NoError(t, err, out)
		select {
		case <-sess.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("the removed cluster's session is still open after 20s")
		}
		var he *tunnel.HandshakeError
		require.ErrorAs(t, e.dialAs(ctx, &cert, "x3"), &he)
		assert.Equal(t, http.StatusForbidden, he.StatusCode, he.Reason)

		// A new cluster of the same name does not revive old certificates.
		out, err = e.ctl(ctx, "cluster", "add", "x3")
		require.NoError(t, err, out)
		require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
			err := e.dialAs(ctx, &cert, "x3")
			if errors.As(err, &he) && strings.Contains(he.Reason, "revoked") {
				return nil
			}
			return fmt.Errorf("want a refusal naming revocation, got %v", err)
		}))
	})
}

func (e *environment) dialer(cert *tls.Certificate, cluster string) *tunnel.Dialer {
	cfg := e.hub.TLSConfig()
	cfg.Certificates = []tls.Certificate{*cert}
	h := http.Header{}
	h.Set(tunnel.HeaderCluster, cluster)
	return &tunnel.Dialer{URL: fmt.Sprintf("wss://127.0.0.1:%d", e.hub.Port), TLSConfig: cfg, Header: h}
}

// dialAs opens and closes one tunnel session.
func (e *environment) dialAs(ctx context.Context, cert *tls.Certificate, cluster string) error {
	sess, err := e.dialer(cert, cluster).Dial(ctx)
	if err != nil {
		return err
	}
	return sess.Close()
}
