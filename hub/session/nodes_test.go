package session

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseNodeAddresses(t *testing.T) {
	many := ""
	for i := range maxNodeAddresses + 1 {
		if i > 0 {
			many += ","
		}
		many += netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}).String()
	}
	cases := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{"none", "", nil, false},
		{"two", "10.0.0.1, fd00::5", []string{"10.0.0.1", "fd00::5"}, false},
		{"mapped v4 is unmapped", "::ffff:10.0.0.1", []string{"10.0.0.1"}, false},
		{"not an IP", "node-1", nil, true},
		{"loopback", "127.0.0.1", nil, true},
		{"metadata", "169.254.169.254", nil, true},
		{"aws v6 metadata", "fd00:ec2::254", nil, true},
		{"unspecified", "0.0.0.0", nil, true},
		{"too many", many, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNodeAddresses(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			assert.Equal(t, tc.want, s)
		})
	}
}

func TestWithinCIDRs(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::1")}
	require.NoError(t, withinCIDRs(addrs, nil), "no bound")
	require.NoError(t, withinCIDRs(addrs, []string{"10.1.0.0/16", "fd00::/8"}))
	require.ErrorContains(t, withinCIDRs(addrs, []string{"10.1.0.0/16"}), "fd00::1 is outside")
	require.ErrorContains(t, withinCIDRs(addrs, []string{"10.1.0.0"}), "nodeCIDRs entry")
}
