package auth

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"time"

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
		return "", &session.AgentRefusal{Cluster: id.Cluster, Reason: session.RefusalOtherCluster(id.Cluster),
			Err: fmt.Errorf("%w: certificate is for cluster %q, not %q", session.ErrAgentForbidden, id.Cluster, want)}
	}
	return id.Cluster, nil
}

// Identify verifies the peer certificate and checks its cluster still
// exists under the same UID. Errors wrap ErrAgentAuth (401) or
// session.ErrAgentForbidden (403); those about a certificate the hub's CA
// issued to a cluster (expired, revoked) are *session.AgentRefusal, so
// the refusal is recorded in that cluster's status.
func (a *AgentCerts) Identify(r *http.Request) (identity.AgentIdentity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return identity.AgentIdentity{}, errNoAgentCredentials
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: a.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		// A caller's certificate from another CA is not an agent's.
		err = fmt.Errorf("%w: %v", errNoAgentCredentials, err)
		return identity.AgentIdentity{}, outOfDate(leaf, opts, err)
	}
	id, err := identity.AgentIdentityOf(leaf)
	if err != nil {
		return identity.AgentIdentity{}, fmt.Errorf("%w: %v", ErrAgentAuth, err)
	}
	uid, ok := a.Clusters.UID(id.Cluster)
	switch {
	case !ok:
		return identity.AgentIdentity{}, &session.AgentRefusal{Cluster: id.Cluster, Reason: session.RefusalNotRegistered,
			Err: fmt.Errorf("%w: cluster %q is not registered (removed?)", session.ErrAgentForbidden, id.Cluster)}
	case uid != id.UID:
		return identity.AgentIdentity{}, &session.AgentRefusal{Cluster: id.Cluster, Reason: session.RefusalRevoked,
			Err: fmt.Errorf("%w: certificate was issued to an earlier cluster %q and is revoked", session.ErrAgentForbidden, id.Cluster)}
	}
	return id, nil
}

// outOfDate returns err as a *session.AgentRefusal when leaf is an agent
// certificate the hub's CA issued whose only fault is the time: expired,
// or not yet valid (an agent clock far behind). Verifying it again at a
// moment within its validity proves both that it is ours and which
// cluster it names, so the refusal can be told to that cluster's
// operator. Anything else returns err unchanged.
func outOfDate(leaf *x509.Certificate, opts x509.VerifyOptions, err error) error {
	now := time.Now()
	var reason string
	switch {
	case now.After(leaf.NotAfter):
		opts.CurrentTime, reason = leaf.NotAfter, session.RefusalCertExpired
	case now.Before(leaf.NotBefore):
		opts.CurrentTime, reason = leaf.NotBefore, session.RefusalCertNotYetValid
	default:
		return err
	}
	if _, verr := leaf.Verify(opts); verr != nil {
		return err
	}
	id, ierr := identity.AgentIdentityOf(leaf)
	if ierr != nil {
		return err
	}
	return &session.AgentRefusal{Cluster: id.Cluster, Reason: reason, Err: err}
}
