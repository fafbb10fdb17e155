package frontend

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// NodeLabel is the DNS label that marks a node address in a CONNECT host:
// IPLABEL.node.CLUSTER+suffix.
const NodeLabel = "node"

// errNotATarget: the CONNECT host is neither an IP address nor a name
// under the cluster suffix in one of the forms below.
var errNotATarget = errors.New("not a CONNECT target")

// connectTarget is what a CONNECT host names: a cluster's API server
// (cluster set, addr invalid), a node address of a named cluster (both
// set), or a bare node address (addr set, cluster empty), which only
// routes when exactly one cluster advertises it.
type connectTarget struct {
	cluster string
	addr    netip.Addr
}

func (t connectTarget) node() bool { return t.addr.IsValid() }

// parseTarget reads a CONNECT host (without the port). The forms, in the
// order they are tried:
//
//   - an IP address, bare (IPv6 without brackets: net.SplitHostPort took
//     them off): a node address of whichever cluster advertises it;
//   - IPLABEL.node.CLUSTER+suffix: node address IPLABEL of cluster CLUSTER,
//     where IPLABEL writes the address as sslip.io does, "-" for each "."
//     of an IPv4 address (10-0-0-5) or each ":" of an IPv6 one (fd00--5);
//   - CLUSTER+suffix: cluster CLUSTER's API server.
//
// A cluster name is one DNS label, so the two named forms never overlap:
// one label before the suffix is always a cluster (even one named
// 10-0-0-5), three with "node" in the middle always a node address.
// Names are compared in lower case, as DNS does.
func parseTarget(host, suffix string) (connectTarget, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return connectTarget{}, fmt.Errorf("%w: %s has an IPv6 zone, which means nothing to another host", errNotATarget, host)
		}
		return connectTarget{addr: ip.Unmap()}, nil
	}
	rest, ok := strings.CutSuffix(strings.ToLower(host), strings.ToLower(suffix))
	if !ok || rest == "" {
		return connectTarget{}, errNotATarget
	}
	labels := strings.Split(rest, ".")
	switch {
	case len(labels) == 1:
		if len(validation.IsDNS1123Label(labels[0])) > 0 {
			return connectTarget{}, fmt.Errorf("%w: %q is not a cluster name", errNotATarget, labels[0])
		}
		return connectTarget{cluster: labels[0]}, nil
	case len(labels) == 3 && labels[1] == NodeLabel:
		if len(validation.IsDNS1123Label(labels[2])) > 0 {
			return connectTarget{}, fmt.Errorf("%w: %q is not a cluster name", errNotATarget, labels[2])
		}
		ip, err := parseIPLabel(labels[0])
		if err != nil {
			return connectTarget{}, err
		}
		return connectTarget{cluster: labels[2], addr: ip}, nil
	}
	return connectTarget{}, errNotATarget
}

// parseIPLabel reads an address written as one DNS label: 10-0-0-5 is
// 10.0.0.5, fd00--5 is fd00::5 (sslip.io's convention). An IPv4-mapped
// IPv6 address counts as its IPv4 address, as node routes do.
func parseIPLabel(l string) (netip.Addr, error) {
	// Longer than any address can be written; also bounds the work.
	if l == "" || len(l) > 45 {
		return netip.Addr{}, fmt.Errorf("%w: %q is not an address label", errNotATarget, l)
	}
	if ip, err := netip.ParseAddr(strings.ReplaceAll(l, "-", ".")); err == nil && ip.Is4() {
		return ip, nil
	}
	// Dots would let "1-2.3.4" mix the forms; a label has none anyway.
	if ip, err := netip.ParseAddr(strings.ReplaceAll(l, "-", ":")); err == nil && ip.Is6() && ip.Zone() == "" && !strings.Contains(l, ".") {
		return ip.Unmap(), nil
	}
	return netip.Addr{}, fmt.Errorf("%w: %q is not an address label (10-0-0-5 for 10.0.0.5, fd00--5 for fd00::5)", errNotATarget, l)
}

// nodeHost writes addr of cluster in the named form, for messages.
func nodeHost(addr netip.Addr, cluster, suffix string) string {
	sep := "."
	if addr.Is6() {
		sep = ":"
	}
	return strings.ReplaceAll(addr.String(), sep, "-") + "." + NodeLabel + "." + cluster + suffix
}
