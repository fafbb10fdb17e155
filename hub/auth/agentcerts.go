package auth

import (
	"crypto/x509"
	"fmt"
	"net/http"

	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/tunnel"
)

// ClusterUIDs gives the UID of each registered cluster's Cluster object.
// Agent certificates name it, so a certificate issued to a cluster that was
// removed and re-created under the same name does not work.
type ClusterUIDs interface {
	UID(cluster string) (types.UID, bool)
}

// AgentCerts authenticates agents by a client certificate the hub's CA
// issued at enrollment. The certificate alone decides the cluster: a
// Backhaul-Cluster header naming another is refused, and so is a
// certificate whose Cluster was removed or re-created since.
type AgentCerts struct {
	// Roots returns the CAs that issue agent certificates, as they are in
	// force at each call (the hub CA may be replaced while it runs).
	Roots    func() *x509.CertPool
	Clusters ClusterUIDs
}

var _ session.AgentAuthenticator = (*AgentCerts)(nil)

// AuthenticateAgent implements session.AgentAuthenticator.
func (a *AgentCerts) AuthenticateAgent(r *http.Request) (string, error) {
	id, err := a.Identify(r)
	if err != nil {
		return "", err
	}
	if want := r.Header.Get(tunnel.HeaderCluster); want != "" && want != id.Cluster {
		return "", fmt.Errorf("%w: certificate is for cluster %q, not %q", session.ErrAgentForbidden, id.Cluster, want)
	}
	return id.Cluster, nil
}

// Identify verifies the peer certificate and checks its cluster still
// exists under the same UID. Errors wrap ErrAgentAuth (401) or
// session.ErrAgentForbidden (403).
func (a *AgentCerts) Identify(r *http.Request) (identity.AgentIdentity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return identity.AgentIdentity{}, errNoAgentCredentials
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		// A caller's certificate from another CA is not an agent's.
		return identity.AgentIdentity{}, fmt.Errorf("%w: %v", errNoAgentCredentials, err)
	}
	id, err := identity.AgentIdentityOf(leaf)
	if err != nil {
		return identity.AgentIdentity{}, fmt.Errorf("%w: %v", ErrAgentAuth, err)
	}
	uid, ok := a.Clusters.UID(id.Cluster)
	switch {
	case !ok:
		return identity.AgentIdentity{}, fmt.Errorf("%w: cluster %q is not registered (removed?)", session.ErrAgentForbidden, id.Cluster)
	case uid != id.UID:
		return identity.AgentIdentity{}, fmt.Errorf("%w: certificate was issued to an earlier cluster %q and is revoked", session.ErrAgentForbidden, id.Cluster)
	}
	return id, nil
}
