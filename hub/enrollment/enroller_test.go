package enrollment

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/testutil"
	"backhaul.io/backhaul/tunnel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// enrollEnv serves an Enroller over TLS with one token for alpha.
type enrollEnv struct {
	srv  *httptest.Server
	ca   *CA
	tok  identity.Token
	uids staticUIDs
}

func newEnrollEnv(t *testing.T) *enrollEnv {
	ca, err := NewCA("test-ca")
	require.NoError(t, err)
	tok := newTestToken(t)
	c := fake.NewClientBuilder().WithObjects(tokenSecret(tok, "alpha", time.Now().Add(time.Hour))).Build()
	env := &enrollEnv{ca: ca, tok: tok, uids: staticUIDs{"alpha": "uid-1", "beta": "uid-2"}}
	sessions := session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry()))
	e, err := New(Config{
		Tokens: &BootstrapTokens{Secrets: readerSecrets{c}, Writer: c, Namespace: testNS}, CA: ca, Clusters: env.uids,
		Sessions: sessions, Limits: DefaultLimits(), Validity: time.Hour, Log: testutil.Logger(t), Metrics: NewMetrics(prometheus.NewRegistry()),
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	e.Register(mux)
	env.srv = httptest.NewUnstartedServer(mux)
	env.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
	env.srv.StartTLS()
	t.Cleanup(env.srv.Close)
	return env
}

func (env *enrollEnv) post(t *testing.T, path, cluster, token string, cert *tls.Certificate, body []byte) (*http.Response, []byte) {
	t.Helper()
	cl := env.srv.Client()
	if cert != nil {
		tr := cl.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		cl = &http.Client{Transport: tr}
	}
	req, _ := http.NewRequest(http.MethodPost, env.srv.URL+path, bytes.NewReader(body))
	req.Header.Set(tunnel.HeaderCluster, cluster)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp, buf.Bytes()
}

func TestEnroller(t *testing.T) {
	env := newEnrollEnv(t)
	csr, key := testCSR(t)
	weakKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	weakDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, weakKey)
	require.NoError(t, err)

	resp, body := env.post(t, identity.PathEnroll, "alpha", env.tok.String(), nil, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: weakDER}))
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "weak RSA key: %s", body)
	assert.Contains(t, string(body), "at least 2048")

	resp, body = env.post(t, identity.PathEnroll, "alpha", env.tok.String(), nil, csr)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var er identity.EnrollResponse
	require.NoError(t, json.Unmarshal(body, &er))
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: mustMarshalEC(t, key)})
	cert, err := tls.X509KeyPair([]byte(er.Certificate), keyPEM)
	require.NoError(t, err)
	id, err := identity.AgentIdentityOf(cert.Leaf)
	require.NoError(t, err)
	assert.Equal(t, identity.AgentIdentity{Cluster: "alpha", UID: "uid-1"}, id)
	assert.Equal(t, string(env.ca.PEM()), er.CA)

	resp, _ = env.post(t, identity.PathEnroll, "alpha", env.tok.String(), nil, csr)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "second use")

	resp, body = env.post(t, identity.PathRenew, "alpha", "", &cert, csr)
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	// The certificate authenticates its own cluster on the tunnel, and
	// no other.
	certs := &auth.AgentCerts{Roots: env.ca.Pool, Clusters: env.uids}
	r := httptest.NewRequest(http.MethodGet, tunnel.Path, nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	got, err := certs.AuthenticateAgent(r)
	require.NoError(t, err)
	assert.Equal(t, "alpha", got)
	r.Header.Set(tunnel.HeaderCluster, "beta")
	_, err = certs.AuthenticateAgent(r)
	require.ErrorIs(t, err, session.ErrAgentForbidden)
	r.Header.Del(tunnel.HeaderCluster)
	env.uids["alpha"] = "uid-new" // deleted and re-created
	_, err = certs.AuthenticateAgent(r)
	require.ErrorIs(t, err, session.ErrAgentForbidden)
	resp, _ = env.post(t, identity.PathRenew, "alpha", "", &cert, csr)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "a revoked certificate cannot renew")
}

func mustMarshalEC(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	return b
}

// Replicas starting together race to publish the hub-info ConfigMap; the
// ones that lose the create do not fail.
func TestPublishHubInfoRace(t *testing.T) {
	created := 0
	c := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			created++
			if created == 1 {
				// Another replica created it between our Get and Create.
				cm := obj.DeepCopyObject().(client.Object)
				if err := c.Create(ctx, cm, opts...); err != nil {
					return err
				}
				return apierrors.NewAlreadyExists(corev1.Resource("configmaps"), obj.GetName())
			}
			return c.Create(ctx, obj, opts...)
		},
	}).Build()
	require.NoError(t, PublishHubInfo(t.Context(), c, testNS, "wss://hub:8443", []byte("ca")))
	var cm corev1.ConfigMap
	require.NoError(t, c.Get(t.Context(), client.ObjectKey{Namespace: testNS, Name: identity.HubInfoConfigMap}, &cm))
	assert.Equal(t, "wss://hub:8443", cm.Data[identity.HubInfoKeyURL])
}
