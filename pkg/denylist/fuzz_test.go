package denylist

import (
	"net/netip"
	"testing"
)

// Any address is answered without a panic, with a reason exactly when
// denied; and every IPv6 form that carries a denied IPv4 address is denied
// too, whatever the other bits are.
func FuzzCheck(f *testing.F) {
	f.Add([]byte{169, 254, 169, 254}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{100, 100, 100, 200}, []byte{})
	f.Add([]byte{10, 0, 0, 7}, []byte{0xfe, 0x80})
	f.Fuzz(func(t *testing.T, v4b, rest []byte) {
		if len(v4b) < 4 {
			return
		}
		var r [16]byte
		copy(r[:], rest)
		if len(v4b) == 16 {
			check(t, netip.AddrFrom16([16]byte(v4b)))
		}
		v4 := netip.AddrFrom4([4]byte(v4b[:4]))
		denied, _, _ := check(t, v4)
		a := v4.As4()
		forms := map[string][16]byte{
			"mapped":   {10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]},
			"nat64":    {0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: a[0], 13: a[1], 14: a[2], 15: a[3]},
			"nat64/48": {0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 4: 0, 5: 1, 6: a[0], 7: a[1], 8: r[8], 9: a[2], 10: a[3], 11: r[11], 12: r[12], 13: r[13], 14: r[14], 15: r[15]},
			"6to4":     {0: 0x20, 1: 0x02, 2: a[0], 3: a[1], 4: a[2], 5: a[3], 6: r[6], 7: r[7], 8: r[8], 9: r[9], 10: r[10], 11: r[11], 12: r[12], 13: r[13], 14: r[14], 15: r[15]},
			"teredo-s": {0: 0x20, 1: 0x01, 4: a[0], 5: a[1], 6: a[2], 7: a[3], 8: r[8], 9: r[9], 10: r[10], 11: r[11], 12: r[12], 13: r[13], 14: r[14], 15: r[15]},
			"teredo-c": {0: 0x20, 1: 0x01, 4: r[4], 5: r[5], 6: r[6], 7: r[7], 8: r[8], 9: r[9], 10: r[10], 11: r[11], 12: ^a[0], 13: ^a[1], 14: ^a[2], 15: ^a[3]},
			"isatap":   {0: r[0], 1: r[1], 2: r[2], 3: r[3], 4: r[4], 5: r[5], 6: r[6], 7: r[7], 8: r[8] & 2, 10: 0x5e, 11: 0xfe, 12: a[0], 13: a[1], 14: a[2], 15: a[3]},
		}
		for name, b := range forms {
			ip := netip.AddrFrom16(b)
			if d, _, what := check(t, ip); denied && !d {
				t.Fatalf("%s (%s of %s) passes, but %s is denied", ip, name, v4, v4)
			} else if d && what == "" {
				t.Fatalf("%s denied without saying what it is", ip)
			}
		}
	})
}

func check(t *testing.T, ip netip.Addr) (bool, Reason, string) {
	denied, reason, what := Check(ip)
	if denied != (reason != "") || denied != (what != "") {
		t.Fatalf("%s: denied %v with reason %q and %q", ip, denied, reason, what)
	}
	return denied, reason, what
}
