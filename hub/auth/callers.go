package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"weak"
)

// ClientCerts authenticates callers by a TLS client certificate from the
// client CAs, as Kubernetes does: CN is the user, each O a group. Like
// kube-apiserver, the listener only requests a certificate and this
// verifies it: a certificate of another CA then does not fail the
// handshake (kubectl's "tls: unknown certificate authority") of a caller
// whose bearer token is good; it is simply not a caller's certificate,
// and neither is an agent's, which chains to the hub's own CA.
//
// Every request on one connection carries the same *tls.ConnectionState,
// so the verification (a signature check or more) runs once per
// connection and CA set; the result is forgotten with the connection.
// SetCAs replaces the CAs (a rotated --client-ca-file): from then on every
// request is judged by the new set, on old connections too.
type ClientCerts struct {
	trust atomic.Pointer[clientCAs]

	mu     sync.Mutex
	byConn map[weak.Pointer[tls.ConnectionState]]verifyResult
}

// clientCAs is one generation of trusted CAs; verifications made under an
// older one are not reused.
type clientCAs struct {
	cas   []*x509.Certificate
	roots *x509.CertPool
}

type verifyResult struct {
	trust *clientCAs
	user  *User
	err   error
}

// NewClientCerts authenticates certificates that chain to one of cas.
func NewClientCerts(cas ...*x509.Certificate) *ClientCerts {
	c := &ClientCerts{byConn: map[weak.Pointer[tls.ConnectionState]]verifyResult{}}
	c.SetCAs(cas...)
	return c
}

// SetCAs makes cas the CAs whose certificates authenticate callers.
func (c *ClientCerts) SetCAs(cas ...*x509.Certificate) {
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	c.trust.Store(&clientCAs{cas: slices.Clone(cas), roots: roots})
}

// CAs are the CAs trusted now.
func (c *ClientCerts) CAs() []*x509.Certificate { return slices.Clone(c.trust.Load().cas) }

// Authenticate implements Authenticator.
func (c *ClientCerts) Authenticate(r *http.Request) (*User, bool, error) {
	trust := c.trust.Load()
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || len(trust.cas) == 0 {
		return nil, false, nil
	}
	key := weak.Make(r.TLS)
	c.mu.Lock()
	res, seen := c.byConn[key]
	c.mu.Unlock()
	if !seen || res.trust != trust {
		res = verify(r.TLS, trust)
		c.mu.Lock()
		c.byConn[key] = res
		c.mu.Unlock()
		if !seen {
			runtime.AddCleanup(r.TLS, func(k weak.Pointer[tls.ConnectionState]) {
				c.mu.Lock()
				delete(c.byConn, k)
				c.mu.Unlock()
			}, key)
		}
	}
	if res.user == nil {
		return nil, false, res.err
	}
	return res.user.Copy(), true, nil
}

// verify checks the connection's certificate against the client CAs. A
// certificate the listener already verified to one of them is taken as
// is; one of another CA is no caller's (not an error: an agent's
// certificate, or a stray one next to a good token).
func verify(st *tls.ConnectionState, trust *clientCAs) verifyResult {
	leaf := st.PeerCertificates[0]
	verified := slices.ContainsFunc(st.VerifiedChains, func(chain []*x509.Certificate) bool {
		return len(chain) > 0 && slices.ContainsFunc(trust.cas, chain[len(chain)-1].Equal)
	})
	if !verified {
		inter := x509.NewCertPool()
		for _, ic := range st.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: trust.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			var unknown x509.UnknownAuthorityError
			if errors.As(err, &unknown) {
				return verifyResult{trust: trust}
			}
			return verifyResult{trust: trust, err: fmt.Errorf("%w: client certificate: %v", ErrBadCredentials, err)}
		}
	}
	if leaf.Subject.CommonName == "" {
		return verifyResult{trust: trust, err: fmt.Errorf("%w: client certificate has no common name", ErrBadCredentials)}
	}
	return verifyResult{trust: trust, user: &User{Name: leaf.Subject.CommonName, Groups: append([]string(nil), leaf.Subject.Organization...)}}
}

// StaticTokens authenticates bearer tokens listed in a file in the format of
// kube-apiserver's --token-auth-file: token,user,uid[,"group1,group2"].
// Only the tokens' SHA-256 digests are kept.
type StaticTokens struct {
	byDigest map[[32]byte]*User
}

// NewStaticTokens authenticates each token of users as its user.
func NewStaticTokens(users map[string]*User) *StaticTokens {
	s := &StaticTokens{byDigest: make(map[[32]byte]*User, len(users))}
	for tok, u := range users {
		s.byDigest[sha256.Sum256([]byte(tok))] = u.Copy()
	}
	return s
}

// LoadStaticTokens reads path.
func LoadStaticTokens(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token auth file: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	users := map[string]*User{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return NewStaticTokens(users), nil
		}
		if err != nil {
			return nil, fmt.Errorf("token auth file %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) < 3 || rec[0] == "" || rec[1] == "" {
			return nil, fmt.Errorf("token auth file %s:%d: want token,user,uid[,groups]", path, line)
		}
		if _, dup := users[rec[0]]; dup {
			return nil, fmt.Errorf("token auth file %s:%d: duplicate token", path, line)
		}
		users[rec[0]] = &User{Name: rec[1], UID: rec[2], Groups: splitGroups(rec)}
	}
}

func splitGroups(rec []string) []string {
	if len(rec) < 4 {
		return nil
	}
	var groups []string
	for _, g := range strings.Split(rec[3], ",") {
		if g = strings.TrimSpace(g); g != "" {
			groups = append(groups, g)
		}
	}
	return groups
}

// Authenticate implements Authenticator.
func (s *StaticTokens) Authenticate(r *http.Request) (*User, bool, error) {
	tok, ok := Bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, false, nil
	}
	// Looking up by digest means lookup timing says nothing about the token.
	u, found := s.byDigest[sha256.Sum256([]byte(tok))]
	if !found {
		return nil, false, fmt.Errorf("%w: unknown bearer token", ErrBadCredentials)
	}
	return u.Copy(), true, nil
}
