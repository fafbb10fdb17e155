package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"backhaul.io/backhaul/pkg/denylist"
)

// Refusal reasons, a closed set for the metric label; the deny list adds
// its own (pkg/denylist: metadata, link_local, unspecified, multicast).
const (
	refuseNotAllowed = "not_allowlisted"
	refuseLoopback   = "loopback_admin"
)

// rule admits one prefix on one port (0: any port is not supported on
// purpose; every rule names its port).
type rule struct {
	prefix netip.Prefix
	port   uint16
}

// Allowlist is the agent's TCP destination policy. Empty means no TCP dials
// at all: by default an agent only serves its API server.
type Allowlist struct {
	rules []rule
	// adminPorts are the agent's own loopback ports, never dialled.
	adminPorts []uint16
}

// Add admits one address on one port (the API server; in node mode, the
// node's kubelet).
func (a *Allowlist) Add(ip netip.Addr, port uint16) {
	ip = ip.Unmap()
	a.rules = append(a.rules, rule{prefix: netip.PrefixFrom(ip, ip.BitLen()), port: port})
}

// DenyLoopbackPort refuses port on every loopback and unspecified address,
// whatever the rules say: the agent's own admin endpoints are not a target.
func (a *Allowlist) DenyLoopbackPort(port uint16) {
	a.adminPorts = append(a.adminPorts, port)
}

// ParseAllowlist reads entries "IP:port", "CIDR:port" or "[IPv6]:port".
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		// SplitHostPort insists on brackets around IPv6, so "fd00::1:443"
		// is an error rather than a silent guess at the port.
		host, portStr, err := net.SplitHostPort(e)
		if err != nil {
			return nil, fmt.Errorf("allow %q: want IP:port, CIDR:port or [IPv6]:port: %w", e, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("allow %q: bad port", e)
		}
		var p netip.Prefix
		if strings.Contains(host, "/") {
			p, err = netip.ParsePrefix(host)
		} else {
			var ip netip.Addr
			ip, err = netip.ParseAddr(host)
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("allow %q: %w", e, err)
		}
		a.rules = append(a.rules, rule{prefix: p.Masked(), port: uint16(port)})
	}
	return a, nil
}

// Check says whether addr may be dialled, and if not, why (reason is a
// metric label, msg is for the caller).
func (a *Allowlist) Check(addr netip.AddrPort) (ok bool, reason, msg string) {
	ip := addr.Addr().Unmap()
	// Never dialled, whatever the allowlist says (the list the hub uses too).
	if denied, reason, what := denylist.Check(ip); denied {
		return false, string(reason), fmt.Sprintf("%s is %s and is never dialled", ip, what)
	}
	if (ip.IsLoopback() || ip.IsUnspecified()) && slices.Contains(a.adminPorts, addr.Port()) {
		return false, refuseLoopback, fmt.Sprintf("%s is the agent's own admin port and is never dialled", addr)
	}
	for _, r := range a.rules {
		if r.port == addr.Port() && r.prefix.Contains(ip) {
			return true, "", ""
		}
	}
	return false, refuseNotAllowed, fmt.Sprintf("%s is not in the agent's allowlist", addr)
}

// Empty reports whether no TCP destination is allowed.
func (a *Allowlist) Empty() bool { return len(a.rules) == 0 }

// resolveAllowed returns the first address for host:port that the allowlist
// admits. Names are resolved here, once, and the checked address is what is
// dialled, so DNS cannot swap the destination after the check.
func (a *Allowlist) resolveAllowed(lookup func(host string) ([]netip.Addr, error), hostport string) (netip.AddrPort, string, string, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, "", "", err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, "", "", err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = lookup(host); err != nil {
		return netip.AddrPort{}, "", "", err
	}
	reason, msg := refuseNotAllowed, fmt.Sprintf("%s is not in the agent's allowlist", hostport)
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		ok, r, m := a.Check(ap)
		if ok {
			return ap, "", "", nil
		}
		reason, msg = r, m
	}
	return netip.AddrPort{}, reason, msg, nil
}
