package denylist

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The attacker asks the hub or an agent to reach a metadata service or the
// dialler's own host, in any spelling an IPv6 stack or a translator may
// turn into the IPv4 address.
func TestDenyListRefusesMetadataInEveryForm(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		reason Reason
	}{
		{"169.254.169.254", Metadata},
		{"169.254.170.2", Metadata},
		{"100.100.100.200", Metadata},
		{"fd00:ec2::254", Metadata},
		{"fd00:ec2::23", Metadata},
		{"169.254.0.1", LinkLocal},
		{"169.254.255.255", LinkLocal},
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"febf:ffff::1", LinkLocal},
		{"0.0.0.0", Unspecified},
		{"0.1.2.3", Unspecified},
		{"::", Unspecified},
		{"224.0.0.1", Multicast},
		{"239.255.255.250", Multicast},
		{"ff02::1", Multicast},
		// The same addresses carried in IPv6.
		{"::ffff:169.254.169.254", Metadata},               // IPv4-mapped
		{"::169.254.169.254", Metadata},                    // IPv4-compatible
		{"::ffff:100.100.100.200", Metadata},               // IPv4-mapped
		{"64:ff9b::100.100.100.200", Metadata},             // NAT64 well-known prefix
		{"64:ff9b::a9fe:a9fe", Metadata},                   // the same, in hex
		{"64:ff9b:1:a9fe:a9:fea9:fe00:0", Metadata},        // NAT64 local-use /48
		{"2002:a9fe:a9fe::1", Metadata},                    // 6to4
		{"2002:6464:64c8::", Metadata},                     // 6to4 of 100.100.100.200
		{"2001:0:a9fe:a9fe::1", Metadata},                  // Teredo server
		{"2001:0:4136:e378:8000:63bf:5601:5601", Metadata}, // Teredo client (^169.254.169.254)
		{"fd00::5efe:169.254.169.254", Metadata},           // ISATAP
		{"2001:db8::200:5efe:a9fe:a9fe", Metadata},         // ISATAP, u bit set
		{"::ffff:0.0.0.0", Unspecified},
		{"64:ff9b::0.0.0.0", Unspecified},
		{"2002::", Unspecified}, // 6to4 of 0.0.0.0
		{"64:ff9b::224.0.0.1", Multicast},
	} {
		ip := netip.MustParseAddr(tc.addr)
		denied, reason, what := Check(ip)
		if assert.True(t, denied, "%s must be denied", tc.addr) {
			assert.Equal(t, tc.reason, reason, tc.addr)
			assert.NotEmpty(t, what, tc.addr)
		}
	}
}

// Ordinary destinations, including NAT64 and 6to4 of public addresses and
// loopback (whose policy is the caller's), pass.
func TestDenyListLetsOrdinaryAddressesThrough(t *testing.T) {
	for _, a := range []string{
		"10.0.0.7", "192.168.1.1", "172.16.0.1", "100.64.0.1", "100.100.100.199", "8.8.8.8",
		"127.0.0.1", "::1", "fd00::1", "fd00:ec2::253", "2001:db8::1",
		"64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:10.0.0.7",
	} {
		denied, reason, what := Check(netip.MustParseAddr(a))
		assert.False(t, denied, "%s: %s (%s)", a, what, reason)
	}
	denied, _, _ := Check(netip.Addr{})
	assert.True(t, denied, "the zero Addr is no destination")
}
