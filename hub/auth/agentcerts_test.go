package auth

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/url"
	"testing"

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
	}{
		{name: "current certificate", r: presenting(current, ""), want: "edge"},
		{name: "header agrees", r: presenting(current, "edge"), want: "edge"},
		{name: "header names another cluster", r: presenting(current, "core"), forbidden: true},
		{name: "re-created cluster", r: presenting(agentCert(t, ca, identity.AgentIdentity{Cluster: "edge", UID: "uid-1"}), ""), forbidden: true},
		{name: "removed cluster", r: presenting(agentCert(t, ca, identity.AgentIdentity{Cluster: "gone", UID: "uid-9"}), ""), forbidden: true},
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
		})
	}
}

func isForbidden(err error) bool { return errors.Is(err, session.ErrAgentForbidden) }
