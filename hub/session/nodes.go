package session

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"backhaul.io/backhaul/pkg/denylist"
)

// maxNodeAddresses bounds what one agent may claim.
const maxNodeAddresses = 32

// parseNodeAddresses reads an agent's advertised node IPs. Addresses that
// can never be a node's (loopback, link-local, unspecified, multicast) are
// refused, so an agent cannot make the hub route to them.
func parseNodeAddresses(h string) ([]netip.Addr, error) {
	if strings.TrimSpace(h) == "" {
		return nil, nil
	}
	parts := strings.Split(h, ",")
	if len(parts) > maxNodeAddresses {
		return nil, fmt.Errorf("%d node addresses advertised, at most %d", len(parts), maxNodeAddresses)
	}
	out := make([]netip.Addr, 0, len(parts))
	for _, p := range parts {
		ip, err := netip.ParseAddr(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("node address %q: %w", p, err)
		}
		if reason := Unroutable(ip); reason != "" {
			return nil, fmt.Errorf("node address %s is %s", ip, reason)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// Unroutable says why the hub never routes to ip, as a phrase that
// completes "ADDRESS is …", or "": loopback, and everything the agents'
// deny list holds (metadata, link-local, unspecified, multicast, also
// carried in IPv6).
func Unroutable(ip netip.Addr) string {
	if ip.Unmap().IsLoopback() {
		return "a loopback address"
	}
	if denied, _, what := denylist.Check(ip); denied {
		return what
	}
	return ""
}

// withinCIDRs checks every advertised address lies in one of cidrs (none:
// no bound), so an agent of one site cannot claim another site's nodes.
func withinCIDRs(addrs []netip.Addr, cidrs []string) error {
	if len(cidrs) == 0 {
		return nil
	}
	prefixes := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("cluster spec.nodeCIDRs entry %q: %w", c, err)
		}
		prefixes = append(prefixes, p.Masked())
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return fmt.Errorf("node address %s is outside the cluster's nodeCIDRs %v", a, cidrs)
		}
	}
	return nil
}
