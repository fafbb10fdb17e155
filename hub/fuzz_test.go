package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"testing"

	"backhaul.io/backhaul/pkg/identity"
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

// Enrolling agents send a PEM CSR body.
func FuzzParseCSR(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	f.Add(good)
	f.Add(append(append([]byte{}, good...), good...))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParseCSR(b)
		if err != nil {
			if !errors.Is(err, errBadCSR) {
				t.Fatalf("error does not mark a bad CSR: %v", err)
			}
			return
		}
		if len(b) > identity.MaxCSRBytes {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR whose signature does not verify")
		}
	})
}

// Enrolling agents and the onboarding script send bootstrap tokens.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"abcdef.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcdef\n", ".", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := identity.ParseToken(s)
		if err != nil {
			return
		}
		if tok.String() != s || len(tok.ID) != identity.TokenIDLen || len(tok.Secret) != identity.TokenSecretLen {
			t.Fatalf("accepted %q as %+v", s, tok)
		}
		if again, err := identity.ParseToken(tok.String()); err != nil || again != tok {
			t.Fatalf("round trip of %q: %+v %v", s, again, err)
		}
	})
}
