package session

import "testing"

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
