package session

import (
	"net/http"
	"strings"
	"testing"

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
