package frontend

import (
	"encoding/base64"
	"net/http"
	"testing"

	"backhaul.io/backhaul/hub/auth"
)

// CONNECT callers send Proxy-Authorization; agents and callers send
// Authorization.
func FuzzCredentialHeaders(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x ", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:tok")), "Basic !!", "Basic", ""} {
		f.Add(s)
	}
	none := auth.NewStaticTokens(nil)
	f.Fuzz(func(t *testing.T, h string) {
		if tok, ok := auth.Bearer(h); ok && tok == "" {
			t.Fatal("empty bearer token accepted")
		}
		if pw, ok := basicPassword(h); ok && pw == "" {
			t.Fatal("empty password accepted")
		}
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		u, ok, err := none.Authenticate(r)
		if ok || u != nil {
			t.Fatalf("an empty token file authenticated %+v", u)
		}
		if _, isBearer := auth.Bearer(h); isBearer && err == nil {
			t.Fatal("an unknown bearer token was not reported as wrong")
		}
	})
}
