package agent

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiserver/pkg/authentication/user"
)

// The agent reads the caller's identity from the hub's Impersonate-*
// headers and writes the final identity back as Impersonate-* for the
// member: whatever the names and extra keys, what it writes reads back as
// the same identity, less the denied groups.
func FuzzCallerIdentityRoundTrip(f *testing.F) {
	f.Add("alice", "uid-1", "dev", "example.com/scopes", "view")
	f.Add("system:serviceaccount:ns:sa", "", "system:masters", "KEY with spaces%", "ü")
	f.Fuzz(func(t *testing.T, name, uid, group, key, value string) {
		if name == "" || !validHeaderValue(name) || !validHeaderValue(uid) || !validHeaderValue(group) || !validHeaderValue(value) {
			return // not something the hub could have sent
		}
		in := &user.DefaultInfo{Name: name, UID: uid, Groups: []string{group, "kept"}, Extra: map[string][]string{key: {value}}}
		h := http.Header{}
		setImpersonation(h, in, []string{"system:masters"})
		out, ok := callerFrom(h)
		if !ok {
			t.Fatalf("identity %+v did not read back", in)
		}
		wantGroups := slices.DeleteFunc(slices.Clone(in.Groups), func(g string) bool { return g == "system:masters" })
		if out.Name != in.Name || out.UID != in.UID || !slices.Equal(out.Groups, wantGroups) {
			t.Fatalf("wrote %+v, read %+v", in, out)
		}
		// Extra keys are case-insensitive on the wire, as in the API server.
		if got := out.Extra[asciiLower(key)]; len(got) != 1 || got[0] != value {
			t.Fatalf("extra %q=%q read back as %v", key, value, out.Extra)
		}
	})
}

// validHeaderValue: what net/http would send as a header value unchanged.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return s == strings.TrimSpace(s)
}

// asciiLower lowers ASCII letters only: header names carry other bytes
// escaped, which lowering does not touch.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
