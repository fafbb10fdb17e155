package identity

import "testing"

// Enrolling agents and the onboarding script send bootstrap tokens.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"abcdef.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcdef\n", ".", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.String() != s || len(tok.ID) != TokenIDLen || len(tok.Secret) != TokenSecretLen {
			t.Fatalf("accepted %q as %+v", s, tok)
		}
		if again, err := ParseToken(tok.String()); err != nil || again != tok {
			t.Fatalf("round trip of %q: %+v %v", s, again, err)
		}
	})
}
