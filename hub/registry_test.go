package hub

import (
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/tunnel"
)

// pipeSessions is a hub and an agent session over a net.Pipe, closed at
// the end of the test.
func pipeSessions(t *testing.T) (hubSide, agentSide *tunnel.Session) {
	t.Helper()
	a, b := net.Pipe()
	cfg := tunnel.DefaultConfig()
	cfg.Logger = testLogger(t)
	hubSide, err := tunnel.NewSession(a, false, cfg)
	require.NoError(t, err)
	agentSide, err = tunnel.NewSession(b, true, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = hubSide.Close(); _ = agentSide.Close() })
	return hubSide, agentSide
}

func pipeSession(t *testing.T) *tunnel.Session {
	s, _ := pipeSessions(t)
	return s
}

func TestRegistryRoutes(t *testing.T) {
	r := NewRegistry(testLogger(t), NewMetrics(prometheus.NewRegistry()))
	a1, a2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	s1, s2, s3 := pipeSession(t), pipeSession(t), pipeSession(t)

	rm1 := r.Add("edge", s1, "v", "node-1", []netip.Addr{a1})
	rm2 := r.Add("edge", s2, "v", "node-2", []netip.Addr{a2})
	c, s, err := r.Route(a1)
	require.NoError(t, err)
	assert.Equal(t, "edge", c)
	assert.Same(t, s1, s, "each node address goes to the agent that advertised it")
	_, s, err = r.Route(a2)
	require.NoError(t, err)
	assert.Same(t, s2, s)

	// A newer claim wins; when it ends, the older one is used again.
	rm3 := r.Add("edge", s3, "v", "node-1b", []netip.Addr{a1})
	_, s, _ = r.Route(a1)
	assert.Same(t, s3, s)
	rm3()
	_, s, _ = r.Route(a1)
	assert.Same(t, s1, s)

	// Routes vanish with their session.
	rm1()
	_, _, err = r.Route(a1)
	assert.ErrorIs(t, err, ErrNoRoute)
	rm2()
	_, _, err = r.Route(a2)
	assert.ErrorIs(t, err, ErrNoRoute)
	_, err = r.Get("edge")
	assert.ErrorIs(t, err, ErrNotConnected)
}

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
