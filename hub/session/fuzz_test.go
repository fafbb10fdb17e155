package session

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// Agents send their node addresses in an upgrade header.
func FuzzParseNodeAddresses(f *testing.F) {
	for _, s := range []string{"", "10.0.0.1", "10.0.0.1, fd00::1", "127.0.0.1", "::ffff:10.1.2.3", "a,b,,c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := parseNodeAddresses(s)
		if err != nil {
			return
		}
		if len(addrs) > maxNodeAddresses {
			t.Fatalf("%d addresses accepted", len(addrs))
		}
		for _, a := range addrs {
			if why := Unroutable(a); why != "" || a.Is4In6() {
				t.Fatalf("accepted %s (%s)", a, why)
			}
		}
	})
}

// Agents announce their features in an upgrade header: at most
// maxFeatures come out, none empty or padded, whatever the header holds.
func FuzzParseFeatures(f *testing.F) {
	for _, s := range []string{"", "hub-apiserver,impersonation", " a , ,b,", ",,,,", strings.Repeat("x,", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := parseFeatures(http.Header{tunnel.HeaderAgentFeatures: {s}})
		if len(got) > maxFeatures {
			t.Fatalf("%d features kept", len(got))
		}
		for _, g := range got {
			if g == "" || g != strings.TrimSpace(g) || strings.Contains(g, ",") {
				t.Fatalf("feature %q", g)
			}
		}
	})
}

// Agents send their clock in an upgrade header: whatever it holds, the
// offset believed is within maxSkew, and only a bounded, well-formed
// value is believed.
func FuzzParseAgentTime(f *testing.F) {
	for _, s := range []string{"", "2030-01-01T12:00:00Z", "2030-01-01T12:00:00.123456789+05:30", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2030-13-45T99:99:99Z", "\x00"} {
		f.Add(s)
	}
	recv := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		off, ok := parseAgentTime(http.Header{tunnel.HeaderAgentTime: {s}}, recv)
		if !ok {
			if off != 0 {
				t.Fatalf("refused %q but returned %v", s, off)
			}
			return
		}
		if len(s) > maxAgentTimeLen || off > maxSkew || off < -maxSkew {
			t.Fatalf("believed %q: offset %v", s, off)
		}
	})
}
