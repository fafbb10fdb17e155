package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// An agent certificate carries its identity twice: the subject, for humans
// and logs (CN "backhaul-agent:NAME", O "backhaul:agents"), and one URI SAN
// "backhaul://cluster/NAME/UID" that the hub decides on. UID is the Cluster
// object's UID when the certificate was issued, so deleting and re-creating
// a Cluster of the same name revokes every certificate issued before.
const (
	AgentCNPrefix    = "backhaul-agent:"
	AgentGroup       = "backhaul:agents"
	agentURIScheme   = "backhaul"
	agentURIHost     = "cluster"
	maxAgentSANCount = 1
)

// AgentIdentity is the cluster an agent certificate binds.
type AgentIdentity struct {
	Cluster string
	UID     types.UID
}

// URI is the SAN that names id.
func (id AgentIdentity) URI() *url.URL {
	return &url.URL{Scheme: agentURIScheme, Host: agentURIHost, Path: "/" + id.Cluster + "/" + string(id.UID)}
}

// CommonName is the certificate subject CN for id.
func (id AgentIdentity) CommonName() string { return AgentCNPrefix + id.Cluster }

// ErrNotAgentCert is returned for a certificate that names no cluster.
var ErrNotAgentCert = errors.New("not a backhaul agent certificate")

// AgentIdentityOf reads the identity of an agent certificate the caller
// has already verified against the hub's agent CA.
func AgentIdentityOf(c *x509.Certificate) (AgentIdentity, error) {
	var found []AgentIdentity
	for _, u := range c.URIs {
		if u.Scheme != agentURIScheme || u.Host != agentURIHost {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts) != 2 || parts[1] == "" {
			return AgentIdentity{}, fmt.Errorf("%w: malformed URI %q", ErrNotAgentCert, u)
		}
		if errs := validation.IsDNS1123Subdomain(parts[0]); len(errs) > 0 {
			return AgentIdentity{}, fmt.Errorf("%w: cluster name %q: %s", ErrNotAgentCert, parts[0], strings.Join(errs, "; "))
		}
		found = append(found, AgentIdentity{Cluster: parts[0], UID: types.UID(parts[1])})
	}
	if len(found) != maxAgentSANCount {
		return AgentIdentity{}, fmt.Errorf("%w: %d cluster URIs", ErrNotAgentCert, len(found))
	}
	if c.Subject.CommonName != found[0].CommonName() {
		return AgentIdentity{}, fmt.Errorf("%w: CN %q does not match %s", ErrNotAgentCert, c.Subject.CommonName, found[0].URI())
	}
	return found[0], nil
}
