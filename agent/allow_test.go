package agent

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/denylist"
)

func TestParseAllowlist(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		want    []rule
		wantErr bool
	}{
		{name: "nothing", entries: nil, want: nil},
		{name: "blank entries are skipped", entries: []string{"", "  "}, want: nil},
		{name: "ipv4 address", entries: []string{"10.0.0.1:5432"}, want: []rule{{netip.MustParsePrefix("10.0.0.1/32"), 5432}}},
		{name: "ipv4 cidr", entries: []string{"10.0.0.0/8:6443"}, want: []rule{{netip.MustParsePrefix("10.0.0.0/8"), 6443}}},
		{name: "cidr with host bits is masked", entries: []string{"10.1.2.3/8:443"}, want: []rule{{netip.MustParsePrefix("10.0.0.0/8"), 443}}},
		{name: "ipv6 address", entries: []string{"[fd00::1]:443"}, want: []rule{{netip.MustParsePrefix("fd00::1/128"), 443}}},
		{name: "ipv6 cidr", entries: []string{"[fd00::/64]:443"}, want: []rule{{netip.MustParsePrefix("fd00::/64"), 443}}},
		{name: "surrounding space", entries: []string{" 10.0.0.1:80 "}, want: []rule{{netip.MustParsePrefix("10.0.0.1/32"), 80}}},
		{name: "several", entries: []string{"10.0.0.1:80", "192.168.0.0/16:443"}, want: []rule{
			{netip.MustParsePrefix("10.0.0.1/32"), 80}, {netip.MustParsePrefix("192.168.0.0/16"), 443},
		}},
		{name: "no port", entries: []string{"10.0.0.1"}, wantErr: true},
		{name: "empty port", entries: []string{"10.0.0.1:"}, wantErr: true},
		{name: "port zero", entries: []string{"10.0.0.1:0"}, wantErr: true},
		{name: "port too big", entries: []string{"10.0.0.1:65536"}, wantErr: true},
		{name: "named port", entries: []string{"10.0.0.1:https"}, wantErr: true},
		{name: "host name", entries: []string{"db.internal:5432"}, wantErr: true},
		{name: "prefix too long", entries: []string{"10.0.0.0/33:80"}, wantErr: true},
		{name: "not an address", entries: []string{"10.0.0.256:80"}, wantErr: true},
		{name: "ipv6 without brackets is ambiguous", entries: []string{"fd00::1:443"}, wantErr: true},
		{name: "one bad entry spoils the list", entries: []string{"10.0.0.1:80", "bad"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAllowlist(tc.entries)
			if tc.wantErr {
				require.Error(t, err)
				assert.Nil(t, a)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, a.rules)
			assert.Equal(t, len(tc.want) == 0, a.Empty())
		})
	}
}

func TestAllowlistCheck(t *testing.T) {
	tests := []struct {
		name       string
		rules      []string
		addr       string
		ok         bool
		wantReason string
	}{
		{name: "exact address and port", rules: []string{"10.0.0.1:5432"}, addr: "10.0.0.1:5432", ok: true},
		{name: "inside cidr", rules: []string{"10.0.0.0/8:443"}, addr: "10.20.30.40:443", ok: true},
		{name: "ipv6 inside cidr", rules: []string{"[fd00::/64]:443"}, addr: "[fd00::42]:443", ok: true},
		{name: "ipv4-mapped ipv6 matches the ipv4 rule", rules: []string{"10.0.0.0/8:443"}, addr: "[::ffff:10.0.0.1]:443", ok: true},
		{name: "wrong port", rules: []string{"10.0.0.0/8:443"}, addr: "10.0.0.1:80", wantReason: refuseNotAllowed},
		{name: "right port on another rule's address", rules: []string{"10.0.0.1:80", "10.0.0.2:443"}, addr: "10.0.0.1:443", wantReason: refuseNotAllowed},
		{name: "outside cidr", rules: []string{"10.0.0.0/8:443"}, addr: "11.0.0.1:443", wantReason: refuseNotAllowed},
		{name: "empty list refuses all", rules: nil, addr: "10.0.0.1:443", wantReason: refuseNotAllowed},
		{name: "ipv4 rule does not admit ipv6", rules: []string{"0.0.0.0/0:443"}, addr: "[fd00::1]:443", wantReason: refuseNotAllowed},

		// Never dialled, whatever the rules say.
		{name: "metadata address", rules: []string{"0.0.0.0/0:80"}, addr: "169.254.169.254:80", wantReason: metadata},
		{name: "link-local exactly allowed", rules: []string{"169.254.169.254:80"}, addr: "169.254.169.254:80", wantReason: metadata},
		{name: "ipv4 link-local edge", rules: []string{"169.254.0.0/16:443"}, addr: "169.254.255.255:443", wantReason: linkLocal},
		{name: "ipv4-mapped metadata address", rules: []string{"0.0.0.0/0:80"}, addr: "[::ffff:169.254.169.254]:80", wantReason: metadata},
		{name: "ipv6 link-local", rules: []string{"[::/0]:80"}, addr: "[fe80::1]:80", wantReason: linkLocal},
		{name: "ipv6 link-local edge", rules: []string{"[fe80::/10]:80"}, addr: "[febf:ffff::1]:80", wantReason: linkLocal},
		{name: "aws ipv6 metadata", rules: []string{"[fd00::/8]:80"}, addr: "[fd00:ec2::254]:80", wantReason: metadata},
		{name: "aws ipv6 metadata exactly allowed", rules: []string{"[fd00:ec2::254]:80"}, addr: "[fd00:ec2::254]:80", wantReason: metadata},
		{name: "alibaba cloud metadata", rules: []string{"100.64.0.0/10:80"}, addr: "100.100.100.200:80", wantReason: metadata},
		{name: "metadata through nat64", rules: []string{"[64:ff9b::/96]:80"}, addr: "[64:ff9b::100.100.100.200]:80", wantReason: metadata},
		{name: "metadata through 6to4", rules: []string{"[2002::/16]:80"}, addr: "[2002:a9fe:a9fe::1]:80", wantReason: metadata},
		{name: "this network reaches the local host", rules: []string{"0.0.0.0/0:80"}, addr: "0.0.0.0:80", wantReason: unspecified},
		{name: "public address through nat64", rules: []string{"[64:ff9b::/96]:80"}, addr: "[64:ff9b::8.8.8.8]:80", ok: true},
		{name: "neighbour of aws ipv6 metadata", rules: []string{"[fd00::/8]:80"}, addr: "[fd00:ec2::253]:80", ok: true},
		{name: "just outside ipv4 link-local", rules: []string{"0.0.0.0/0:80"}, addr: "169.255.0.1:80", ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAllowlist(tc.rules)
			require.NoError(t, err)
			ok, reason, msg := a.Check(netip.MustParseAddrPort(tc.addr))
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.wantReason, reason)
			if tc.ok {
				assert.Empty(t, msg)
			} else {
				assert.NotEmpty(t, msg)
			}
		})
	}
}

// TestAllowlistZonedLinkLocal: an address with an IPv6 zone matches no
// prefix at all, so it cannot slip past the deny list onto an allow rule.
func TestAllowlistZonedLinkLocal(t *testing.T) {
	a, err := ParseAllowlist([]string{"[::/0]:80"})
	require.NoError(t, err)
	ok, _, _ := a.Check(netip.MustParseAddrPort("[fe80::1%eth0]:80"))
	assert.False(t, ok)
}

func TestAllowlistResolve(t *testing.T) {
	a, err := ParseAllowlist([]string{"10.0.0.0/8:5432", "[fd00::/64]:5432", "0.0.0.0/0:80"})
	require.NoError(t, err)
	errNoSuchHost := errors.New("no such host")
	names := map[string][]netip.Addr{
		"db.internal":       {netip.MustParseAddr("10.0.0.5")},
		"metadata-first":    {netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("10.0.0.6")},
		"only-metadata":     {netip.MustParseAddr("169.254.169.254")},
		"public":            {netip.MustParseAddr("8.8.8.8")},
		"v6":                {netip.MustParseAddr("fd00::5")},
		"mapped":            {netip.MustParseAddr("::ffff:10.0.0.7")},
		"nothing-allowed-2": {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("8.8.4.4")},
	}
	tests := []struct {
		name       string
		hostport   string
		want       string
		wantReason string
		wantErr    error
		noLookup   bool
	}{
		{name: "name resolves to an allowed address", hostport: "db.internal:5432", want: "10.0.0.5:5432"},
		{name: "the first allowed address is chosen", hostport: "metadata-first:5432", want: "10.0.0.6:5432"},
		{name: "ipv6 name", hostport: "v6:5432", want: "[fd00::5]:5432"},
		{name: "ipv4-mapped answer is unmapped", hostport: "mapped:5432", want: "10.0.0.7:5432"},
		{name: "name resolves only to metadata", hostport: "only-metadata:80", wantReason: metadata},
		{name: "name resolves outside the list", hostport: "public:5432", wantReason: refuseNotAllowed},
		{name: "no answer allowed", hostport: "nothing-allowed-2:5432", wantReason: refuseNotAllowed},
		{name: "port decides", hostport: "db.internal:5433", wantReason: refuseNotAllowed},
		{name: "ip literal is not looked up", hostport: "10.1.1.1:5432", want: "10.1.1.1:5432", noLookup: true},
		{name: "ipv6 literal", hostport: "[fd00::9]:5432", want: "[fd00::9]:5432", noLookup: true},
		{name: "metadata literal", hostport: "169.254.169.254:80", wantReason: metadata, noLookup: true},
		{name: "lookup fails", hostport: "unknown:5432", wantErr: errNoSuchHost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var looked []string
			lookup := func(host string) ([]netip.Addr, error) {
				looked = append(looked, host)
				if ips, ok := names[host]; ok {
					return ips, nil
				}
				return nil, errNoSuchHost
			}
			ap, reason, msg, err := a.resolveAllowed(lookup, tc.hostport)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantReason, reason)
			if tc.want != "" {
				assert.Equal(t, netip.MustParseAddrPort(tc.want), ap)
				assert.Empty(t, msg)
			} else {
				assert.False(t, ap.IsValid(), "a refused address must not be returned")
				assert.NotEmpty(t, msg)
			}
			if tc.noLookup {
				assert.Empty(t, looked)
			} else {
				host, _, err := net.SplitHostPort(tc.hostport)
				require.NoError(t, err)
				assert.Equal(t, []string{host}, looked)
			}
		})
	}

	t.Run("malformed host:port", func(t *testing.T) {
		for _, hp := range []string{"no-port", "host:port", "host:70000", ""} {
			_, _, _, err := a.resolveAllowed(func(string) ([]netip.Addr, error) {
				t.Errorf("lookup called for %q", hp)
				return nil, nil
			}, hp)
			assert.Error(t, err, hp)
		}
	})
}

// The deny list's reasons, as the metric labels them.
var (
	metadata    = string(denylist.Metadata)
	linkLocal   = string(denylist.LinkLocal)
	unspecified = string(denylist.Unspecified)
)

func TestAllowlistAdminPortAndAdd(t *testing.T) {
	a := &Allowlist{}
	a.Add(netip.MustParseAddr("127.0.0.1"), 9090)
	a.Add(netip.MustParseAddr("10.0.0.5"), 10250)
	a.DenyLoopbackPort(9090)
	cases := []struct {
		name   string
		addr   string
		ok     bool
		reason string
	}{
		{"added address", "10.0.0.5:10250", true, ""},
		{"added address, other port", "10.0.0.5:22", false, refuseNotAllowed},
		{"admin port even when listed", "127.0.0.1:9090", false, refuseLoopback},
		{"admin port on another loopback", "127.0.0.2:9090", false, refuseLoopback},
		{"admin port on ::1", "[::1]:9090", false, refuseLoopback},
		{"admin port on unspecified", "0.0.0.0:9090", false, unspecified}, // never dialled at all
		{"admin port on ::", "[::]:9090", false, unspecified},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason, _ := a.Check(netip.MustParseAddrPort(tc.addr))
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.reason, reason)
		})
	}
}
