package identity

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// A hub replica's certificate, for the connections replicas keep with each
// other, names the replica in one URI SAN "backhaul://replica/NAME" (and
// in its CN "backhaul-replica:NAME", for humans). It is issued by the hub
// CA to the replica itself at start, for client and server auth; it is
// never an agent's certificate (that names a cluster) nor a caller's.
const (
	ReplicaCNPrefix = "backhaul-replica:"
	replicaURIHost  = "replica"
)

// ReplicaURI is the SAN that names replica name.
func ReplicaURI(name string) *url.URL {
	return &url.URL{Scheme: agentURIScheme, Host: replicaURIHost, Path: "/" + name}
}

// ReplicaOf reads the replica name of a certificate the caller has already
// verified against the hub CA.
func ReplicaOf(c *x509.Certificate) (string, error) {
	var found []string
	for _, u := range c.URIs {
		if u.Scheme == agentURIScheme && u.Host == replicaURIHost {
			found = append(found, strings.TrimPrefix(u.Path, "/"))
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("not a hub replica certificate: %d replica URIs", len(found))
	}
	name := found[0]
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fmt.Errorf("not a hub replica certificate: name %q: %s", name, strings.Join(errs, "; "))
	}
	if c.Subject.CommonName != ReplicaCNPrefix+name {
		return "", fmt.Errorf("not a hub replica certificate: CN %q does not match %s", c.Subject.CommonName, ReplicaURI(name))
	}
	return name, nil
}
