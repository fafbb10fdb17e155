// Package denylist is the one list of addresses that neither the hub (node
// routes, CONNECT) nor the agent (TCP dials) ever reach, whatever an
// allowlist or an agent's advertisement says: cloud metadata services,
// link-local, unspecified and multicast addresses — also when written as
// an IPv6 address that carries one of them (IPv4-mapped or -compatible,
// NAT64, 6to4, Teredo, ISATAP), since such an address may be translated to
// the IPv4 one on the way.
//
// It must not import anything of the hub or the agent.
package denylist

import (
	"fmt"
	"net/netip"
)

// Reason is why an address is denied; a closed set, fit for a metric
// label.
type Reason string

// Reasons.
const (
	Metadata    Reason = "metadata"
	LinkLocal   Reason = "link_local"
	Unspecified Reason = "unspecified"
	Multicast   Reason = "multicast"
)

// entry is one denied range.
type entry struct {
	prefix netip.Prefix
	reason Reason
	what   string
}

// table is checked in order; the first match wins, so the specific
// metadata addresses come before the ranges that hold them.
var table = []entry{
	{netip.MustParsePrefix("169.254.169.254/32"), Metadata, "the AWS, GCP, Azure and OpenStack metadata service"},
	{netip.MustParsePrefix("169.254.170.2/32"), Metadata, "the AWS ECS task metadata service"},
	{netip.MustParsePrefix("100.100.100.200/32"), Metadata, "the Alibaba Cloud metadata service"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), Metadata, "the AWS IPv6 metadata service"},
	{netip.MustParsePrefix("fd00:ec2::23/128"), Metadata, "the AWS IPv6 time and DNS service"},
	{netip.MustParsePrefix("169.254.0.0/16"), LinkLocal, "an IPv4 link-local address"},
	{netip.MustParsePrefix("fe80::/10"), LinkLocal, "an IPv6 link-local address"},
	// 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to the local
	// host, so it would reach the dialler's own loopback services.
	{netip.MustParsePrefix("0.0.0.0/8"), Unspecified, `an IPv4 "this network" address (reaches the local host)`},
	{netip.MustParsePrefix("::/128"), Unspecified, "the IPv6 unspecified address (reaches the local host)"},
	{netip.MustParsePrefix("224.0.0.0/4"), Multicast, "an IPv4 multicast address"},
	{netip.MustParsePrefix("ff00::/8"), Multicast, "an IPv6 multicast address"},
}

// Check says whether ip is denied: what it is, as a phrase that completes
// "ADDRESS is …", and why, as a Reason.
func Check(ip netip.Addr) (denied bool, reason Reason, what string) {
	if !ip.IsValid() {
		return true, Unspecified, "no address"
	}
	ip = ip.WithZone("") // a zoned address matches no prefix
	if e, ok := lookup(ip.Unmap()); ok {
		return true, e.reason, e.what
	}
	for _, v4 := range embedded(ip) {
		if e, ok := lookup(v4); ok {
			return true, e.reason, fmt.Sprintf("an IPv6 address carrying %s, %s", v4, e.what)
		}
	}
	return false, "", ""
}

func lookup(ip netip.Addr) (entry, bool) {
	for _, e := range table {
		if e.prefix.Contains(ip) {
			return e, true
		}
	}
	return entry{}, false
}

// Prefixes that carry an IPv4 address inside an IPv6 one.
var (
	compatible = netip.MustParsePrefix("::/96")          // IPv4-compatible (deprecated), last 32 bits
	nat64      = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052 well-known prefix, last 32 bits
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215 local use, bits 48–87 less bits 64–71
	sixToFour  = netip.MustParsePrefix("2002::/16")      // RFC 3056, bits 16–47
	teredo     = netip.MustParsePrefix("2001::/32")      // RFC 4380: server bits 32–63, client ^0xffffffff in the last 32
)

// embedded is every IPv4 address that ip may stand for. IPv4-mapped
// addresses are handled by Unmap before this.
func embedded(ip netip.Addr) []netip.Addr {
	if !ip.Is6() {
		return nil
	}
	b := ip.As16()
	v4 := func(x []byte) netip.Addr { return netip.AddrFrom4([4]byte(x)) }
	var out []netip.Addr
	switch {
	case ip.IsLoopback(): // ::1 is not the IPv4-compatible 0.0.0.1
	case compatible.Contains(ip):
		out = append(out, v4(b[12:16]))
	case nat64.Contains(ip):
		out = append(out, v4(b[12:16]))
	case nat64Local.Contains(ip):
		out = append(out, v4([]byte{b[6], b[7], b[9], b[10]}))
	case sixToFour.Contains(ip):
		out = append(out, v4(b[2:6]))
	case teredo.Contains(ip):
		out = append(out, v4(b[4:8]), v4([]byte{^b[12], ^b[13], ^b[14], ^b[15]}))
	}
	// ISATAP (RFC 5214): an interface identifier of 0000:5efe or 0200:5efe
	// (the u bit may be set) followed by the IPv4 address, under any
	// prefix.
	if (b[8] == 0 || b[8] == 2) && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe {
		out = append(out, v4(b[12:16]))
	}
	return out
}
