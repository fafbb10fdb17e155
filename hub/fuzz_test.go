package hub

import (
	"encoding/base64"
	"net/http"
	"testing"
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
			if why := unroutable(a); why != "" || a.Is4In6() {
				t.Fatalf("accepted %s (%s)", a, why)
			}
		}
	})
}

// CONNECT callers send Proxy-Authorization; agents and callers send
// Authorization.
func FuzzCredentialHeaders(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x ", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:tok")), "Basic !!", "Basic", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if tok, ok := bearer(h); ok && tok == "" {
			t.Fatal("empty bearer token accepted")
		}
		if pw, ok := basicPassword(h); ok && pw == "" {
			t.Fatal("empty password accepted")
		}
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		st := &StaticTokens{byDigest: map[[32]byte]*User{}}
		u, ok, err := st.Authenticate(r)
		if ok || u != nil {
			t.Fatalf("an empty token file authenticated %+v", u)
		}
		if _, isBearer := bearer(h); isBearer && err == nil {
			t.Fatal("an unknown bearer token was not reported as wrong")
		}
	})
}
