package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func bearerRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/clusters/alpha/api", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestStaticTokens(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"),
		"# token,user,uid,groups\n"+
			`alice-token,alice,uid-alice,"dev,ops"`+"\n"+
			"bob-token,bob,uid-bob\n"+
			`carol-token,carol,,"  spaced , ,trailing,"`+"\n"+
			"dave-token,dave,uid-dave,single\n")
	st, err := LoadStaticTokens(file)
	require.NoError(t, err)

	tests := []struct {
		name   string
		token  string
		want   *User
		ok     bool
		errBad bool
	}{
		{name: "groups in quotes", token: "alice-token", ok: true, want: &User{Name: "alice", UID: "uid-alice", Groups: []string{"dev", "ops"}}},
		{name: "no groups", token: "bob-token", ok: true, want: &User{Name: "bob", UID: "uid-bob"}},
		{name: "groups trimmed, empty uid", token: "carol-token", ok: true, want: &User{Name: "carol", Groups: []string{"spaced", "trailing"}}},
		{name: "one group", token: "dave-token", ok: true, want: &User{Name: "dave", UID: "uid-dave", Groups: []string{"single"}}},
		{name: "unknown token", token: "mallory-token", errBad: true},
		{name: "no token", token: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, ok, err := st.Authenticate(bearerRequest(tc.token))
			if tc.errBad {
				require.ErrorIs(t, err, ErrBadCredentials)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, u)
		})
	}

	t.Run("callers cannot change the stored user", func(t *testing.T) {
		u, _, err := st.Authenticate(bearerRequest("alice-token"))
		require.NoError(t, err)
		u.Groups[0] = "system:masters"
		u.Name = "root"
		again, _, err := st.Authenticate(bearerRequest("alice-token"))
		require.NoError(t, err)
		assert.Equal(t, "alice", again.Name)
		assert.Equal(t, []string{"dev", "ops"}, again.Groups)
	})
}

func TestStaticTokensRejects(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{name: "two fields", content: "tok,alice\n"},
		{name: "one field", content: "tok\n"},
		{name: "empty token", content: ",alice,uid\n"},
		{name: "empty user", content: "tok,,uid\n"},
		{name: "duplicate token", content: "tok,alice,1\ntok,bob,2\n"},
		{name: "bad quoting", content: "\"tok,alice,uid\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := LoadStaticTokens(writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), tc.content))
			require.Error(t, err)
			assert.Nil(t, st)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadStaticTokens(filepath.Join(t.TempDir(), "absent"))
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
}

type certResult struct {
	user *User
	ok   bool
	err  error
}

// TestClientCerts authenticates callers through a real TLS handshake.
func TestClientCerts(t *testing.T) {
	ca := hubtest.NewCA(t, "callers")
	other := hubtest.NewCA(t, "someone else")
	srv, results := clientCertServer(t, ca)

	tests := []struct {
		name   string
		cert   *tls.Certificate
		want   *User
		ok     bool
		errBad bool
		force  bool // send the certificate whatever the server asks for
	}{
		{name: "user and groups", cert: ptr(ca.ClientCert(t, "alice", "dev", "ops")), ok: true, want: &User{Name: "alice", Groups: []string{"dev", "ops"}}},
		{name: "user without groups", cert: ptr(ca.ClientCert(t, "bob")), ok: true, want: &User{Name: "bob"}},
		{name: "no certificate", cert: nil},
		{name: "no common name", cert: ptr(ca.ClientCert(t, "", "dev")), errBad: true},
		// The client sees the hub does not trust its CA and sends nothing.
		{name: "another CA, offered", cert: ptr(other.ClientCert(t, "mallory", "system:masters"))},
		// Sent anyway (kubectl with a stale kubeconfig does): the handshake
		// goes through, as kube-apiserver's does, and the certificate is
		// simply not a caller's; a token alongside may still authenticate.
		{name: "another CA, forced", cert: ptr(other.ClientCert(t, "mallory", "system:masters")), force: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			if tc.force {
				cert := tc.cert
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
			}
			tr := &http.Transport{TLSClientConfig: cfg}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			require.NoError(t, err, "the handshake goes through")
			_ = resp.Body.Close()
			r := <-results
			if tc.errBad {
				require.ErrorIs(t, r.err, ErrBadCredentials)
			} else {
				require.NoError(t, r.err)
			}
			assert.Equal(t, tc.ok, r.ok)
			if tc.want != nil {
				require.NotNil(t, r.user)
				assert.Equal(t, tc.want.Name, r.user.Name)
				assert.ElementsMatch(t, tc.want.Groups, r.user.Groups)
			} else {
				assert.Nil(t, r.user)
			}
		})
	}

}

// An authenticated caller needs a certificate that chains to one of
// the client CAs.
func TestClientCertsNeedVerifiedChain(t *testing.T) {
	ca := hubtest.NewCA(t, "callers")
	other := hubtest.NewCA(t, "someone else")
	t.Run("plain HTTP", func(t *testing.T) {
		u, ok, err := NewClientCerts().Authenticate(httptest.NewRequest(http.MethodGet, "/", nil))
		assert.Nil(t, u)
		assert.False(t, ok)
		assert.NoError(t, err)
	})
	t.Run("certificate of another CA (an agent's) is not a caller's", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		leaf := other.ClientCert(t, "mallory").Leaf
		// The listener verified it, against the agent CA it also trusts.
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, other.Cert}}}
		u, ok, err := NewClientCerts(ca.Cert).Authenticate(r)
		assert.Nil(t, u)
		assert.False(t, ok)
		assert.NoError(t, err)
	})
}

// clientCertServer runs a real TLS server that requests client
// certificates, as the hub does, and authenticates whatever arrives with
// ClientCerts for ca.
func clientCertServer(t *testing.T, ca *hubtest.CA) (*httptest.Server, <-chan certResult) {
	results := make(chan certResult, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok, err := NewClientCerts(ca.Cert).Authenticate(r)
		results <- certResult{u, ok, err}
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCert(t)},
		ClientCAs:    ca.Pool,
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, results
}

func ptr[T any](v T) *T { return &v }

// fakeAuthn answers fixed values and counts calls.
type fakeAuthn struct {
	user  *User
	ok    bool
	err   error
	calls int
}

func (f *fakeAuthn) Authenticate(*http.Request) (*User, bool, error) {
	f.calls++
	return f.user, f.ok, f.err
}

func TestUnion(t *testing.T) {
	alice := &User{Name: "alice"}
	bob := &User{Name: "bob"}
	boom := errors.New("boom")
	tests := []struct {
		name      string
		members   []*fakeAuthn
		want      *User
		ok        bool
		wantErr   error
		wantCalls []int
	}{
		{name: "empty"},
		{name: "first recognises", members: []*fakeAuthn{{user: alice, ok: true}, {user: bob, ok: true}}, want: alice, ok: true, wantCalls: []int{1, 0}},
		{name: "second recognises", members: []*fakeAuthn{{}, {user: bob, ok: true}}, want: bob, ok: true, wantCalls: []int{1, 1}},
		{name: "a later authenticator may accept what an earlier refused", members: []*fakeAuthn{{err: boom}, {user: bob, ok: true}}, want: bob, ok: true, wantCalls: []int{1, 1}},
		{name: "first error when nobody accepts", members: []*fakeAuthn{{err: boom}, {}, {err: errors.New("later")}}, wantErr: boom, wantCalls: []int{1, 1, 1}},
		{name: "nobody recognises", members: []*fakeAuthn{{}, {}}, wantCalls: []int{1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var u Union
			for _, m := range tc.members {
				u = append(u, m)
			}
			got, ok, err := u.Authenticate(httptest.NewRequest(http.MethodGet, "/", nil))
			require.ErrorIs(t, err, tc.wantErr)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
			for i, m := range tc.members {
				assert.Equal(t, tc.wantCalls[i], m.calls, "member %d", i)
			}
		})
	}
}

func TestAllowAuthenticated(t *testing.T) {
	ok, _, err := AllowAuthenticated{}.Authorize(context.Background(), &User{Name: "alice"}, "alpha")
	require.NoError(t, err)
	assert.True(t, ok)
}

var (
	_ Authenticator = Union(nil)
	_ Authenticator = (*ClientCerts)(nil)
	_ Authenticator = (*StaticTokens)(nil)
	_ Authorizer    = AllowAuthenticated{}
)

// A certificate is verified once per connection, and forgotten with it.
func TestClientCertsRememberPerConnection(t *testing.T) {
	ca := hubtest.NewCA(t, "callers")
	leaf := ca.ClientCert(t, "alice").Leaf
	c := NewClientCerts(ca.Cert)
	for range 100 {
		st := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
		for range 3 { // three requests on one connection
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.TLS = st
			u, ok, err := c.Authenticate(r)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, "alice", u.Name)
		}
	}
	size := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.byConn)
	}
	assert.LessOrEqual(t, size(), 100, "one entry per connection")
	require.Eventually(t, func() bool { runtime.GC(); return size() == 0 }, hubtest.WaitBound, 10*time.Millisecond,
		"entries go with their connections")
}

// A rotated client CA file takes effect at once: a caller of the new CA
// authenticates, and one of the CA taken out of the file no longer does,
// also on a connection it verified on before the change.
func TestClientCertsFollowCARotation(t *testing.T) {
	oldCA, newCA := hubtest.NewCA(t, "callers 2025"), hubtest.NewCA(t, "callers 2026")
	c := NewClientCerts(oldCA.Cert)
	conn := func(ca *hubtest.CA, user string) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{ca.ClientCert(t, user).Leaf}}
	}
	auth := func(st *tls.ConnectionState) (string, bool) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.TLS = st
		u, ok, err := c.Authenticate(r)
		require.NoError(t, err)
		if !ok {
			return "", false
		}
		return u.Name, true
	}
	alice, bob := conn(oldCA, "alice"), conn(newCA, "bob")
	for _, tc := range []struct {
		name      string
		cas       []*x509.Certificate
		alice     bool
		bob       bool
		wantTrust int
	}{
		{name: "before the rotation", cas: []*x509.Certificate{oldCA.Cert}, alice: true, wantTrust: 1},
		{name: "both during the overlap", cas: []*x509.Certificate{oldCA.Cert, newCA.Cert}, alice: true, bob: true, wantTrust: 2},
		{name: "the old CA removed", cas: []*x509.Certificate{newCA.Cert}, bob: true, wantTrust: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.SetCAs(tc.cas...)
			assert.Len(t, c.CAs(), tc.wantTrust)
			name, ok := auth(alice)
			assert.Equal(t, tc.alice, ok, "alice (old CA) on the same connection")
			if ok {
				assert.Equal(t, "alice", name)
			}
			_, ok = auth(bob)
			assert.Equal(t, tc.bob, ok, "bob (new CA) on the same connection")
		})
	}
}
