package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/tunnel"
)

// staticUIDs stands in for the Cluster informer.
type staticUIDs map[string]types.UID

func (s staticUIDs) UID(c string) (types.UID, bool) { u, ok := s[c]; return u, ok }

func agentCert(t *testing.T, ca *hubtest.CA, id identity.AgentIdentity) tls.Certificate {
	return ca.Issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.CommonName(), Organization: []string{identity.AgentGroup}},
		URIs:        []*url.URL{id.URI()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func presenting(cert tls.Certificate, header string) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "https://hub"+tunnel.Path, nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert.Leaf}}
	if header != "" {
		r.Header.Set(tunnel.HeaderCluster, header)
	}
	return r
}

func TestAgentCerts(t *testing.T) {
	ca, other := hubtest.NewCA(t, "agents"), hubtest.NewCA(t, "callers")
	a := &AgentCerts{Roots: func() *x509.CertPool { return ca.Pool }, Clusters: staticUIDs{"edge": "uid-2"}}
	current := agentCert(t, ca, identity.AgentIdentity{Cluster: "edge", UID: "uid-2"})

	tests := []struct {
		name      string
		r         *http.Request
		want      string
		forbidden bool // else 401
		// refusal is the reason recorded against cluster refused, if any:
		// only a certificate of the hub's CA says whose agent it was.
		refused, refusal string
	}{
		{name: "current certificate", r: presenting(current, ""), want: "edge"},
		{name: "header agrees", r: presenting(current, "edge"), want: "edge"},
		{name: "header names another cluster", r: presenting(current, "core"), forbidden: true, refused: "edge", refusal: session.RefusalOtherCluster("edge")},
		{name: "re-created cluster", r: presenting(agentCert(t, ca, identity.AgentIdentity{Cluster: "edge", UID: "uid-1"}), ""), forbidden: true,
			refused: "edge", refusal: session.RefusalRevoked},
		{name: "removed cluster", r: presenting(agentCert(t, ca, identity.AgentIdentity{Cluster: "gone", UID: "uid-9"}), ""), forbidden: true,
			refused: "gone", refusal: session.RefusalNotRegistered},
		{name: "expired", r: presenting(ca.AgentCert(t, identity.AgentIdentity{Cluster: "edge", UID: "uid-2"}, time.Now().Add(-time.Minute)), ""),
			refused: "edge", refusal: session.RefusalCertExpired},
		{name: "not yet valid", r: presenting(futureCert(t, ca, identity.AgentIdentity{Cluster: "edge", UID: "uid-2"}), ""),
			refused: "edge", refusal: session.RefusalCertNotYetValid},
		{name: "expired, of another CA", r: presenting(other.AgentCert(t, identity.AgentIdentity{Cluster: "edge", UID: "uid-2"}, time.Now().Add(-time.Minute)), "")},
		{name: "another CA", r: presenting(agentCert(t, other, identity.AgentIdentity{Cluster: "edge", UID: "uid-2"}), "")},
		{name: "a caller certificate of the same CA", r: presenting(ca.ClientCert(t, "alice"), "")},
		{name: "a hub replica's certificate", r: presenting(ca.Issue(t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: identity.ReplicaCNPrefix + "hub-0"},
			URIs:        []*url.URL{identity.ReplicaURI("hub-0")},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		}), "edge")},
		{name: "no certificate", r: func() *http.Request { r := presenting(current, ""); r.TLS = nil; return r }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.AuthenticateAgent(tc.r)
			if tc.want != "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.forbidden, isForbidden(err), "%v", err)
			if !tc.forbidden {
				require.ErrorIs(t, err, ErrAgentAuth)
			}
			var ar *session.AgentRefusal
			if tc.refusal == "" {
				assert.False(t, errors.As(err, &ar), "nothing proves whose agent it was: %v", err)
				return
			}
			require.ErrorAs(t, err, &ar)
			assert.Equal(t, tc.refused, ar.Cluster)
			assert.Equal(t, tc.refusal, ar.Reason)
			// Behind a chain, an out-of-date certificate still says whose
			// it was once the chain's other members found nothing.
			_, err = AgentAuthChain{a, &AgentTokens{}}.AuthenticateAgent(tc.r)
			require.ErrorAs(t, err, &ar)
			assert.Equal(t, tc.refusal, ar.Reason)
		})
	}
}

// futureCert is id's agent certificate valid from half an hour on (while
// the test CA is), as the hub sees one issued by a hub whose clock runs
// ahead, or presented by an agent whose clock runs behind.
func futureCert(t *testing.T, ca *hubtest.CA, id identity.AgentIdentity) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: id.CommonName(), Organization: []string{identity.AgentGroup}},
		URIs: []*url.URL{id.URI()}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(30 * time.Minute), NotAfter: time.Now().Add(50 * time.Minute),
	}, ca.Cert, &key.PublicKey, ca.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func isForbidden(err error) bool { return errors.Is(err, session.ErrAgentForbidden) }
