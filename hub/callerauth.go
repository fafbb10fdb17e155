package hub

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
)

// User is an authenticated caller of the gateway.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Authenticator finds the caller of a request. ok is false when the request
// carries no credentials this authenticator understands; err is set when it
// carries credentials that are wrong.
type Authenticator interface {
	Authenticate(r *http.Request) (u *User, ok bool, err error)
}

// Authorizer decides whether u may reach cluster through the hub. The
// member's own RBAC decides everything after that.
type Authorizer interface {
	Authorize(ctx context.Context, u *User, cluster string) (allowed bool, reason string, err error)
}

var errBadCredentials = errors.New("invalid credentials")

// Union tries authenticators in order; the first that recognises the
// credentials decides. A token one authenticator calls wrong may still be
// good to the next (a service-account token after the static token file),
// so errors only decide when no authenticator accepts.
type Union []Authenticator

// Authenticate implements Authenticator.
func (u Union) Authenticate(r *http.Request) (*User, bool, error) {
	var first error
	for _, a := range u {
		user, ok, err := a.Authenticate(r)
		if err == nil && ok {
			return user, true, nil
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return nil, false, first
}

// authStatus is the HTTP status for an authentication or authorization
// error: 503 when the host cluster could not answer (the caller may be
// fine; retry), else unauthenticated.
func authStatus(err error, unauthenticated int) int {
	if errors.Is(err, ErrAuthUnavailable) {
		return http.StatusServiceUnavailable
	}
	return unauthenticated
}

// ClientCerts authenticates callers by a TLS client certificate from the
// client CA, as Kubernetes does: CN is the user, each O a group. The TLS
// listener also accepts agent certificates from the hub's own CA, so only a
// chain the handshake verified up to one of CAs counts: an agent
// certificate is never a caller's. (Checking the verified chain's root
// costs a comparison per request; verifying again would cost a signature
// check.)
type ClientCerts struct {
	CAs []*x509.Certificate
}

// Authenticate implements Authenticator.
func (c ClientCerts) Authenticate(r *http.Request) (*User, bool, error) {
	if r.TLS == nil {
		return nil, false, nil
	}
	for _, chain := range r.TLS.VerifiedChains {
		if len(chain) == 0 || !slices.ContainsFunc(c.CAs, chain[len(chain)-1].Equal) {
			continue
		}
		leaf := chain[0]
		if leaf.Subject.CommonName == "" {
			return nil, false, fmt.Errorf("%w: client certificate has no common name", errBadCredentials)
		}
		return &User{Name: leaf.Subject.CommonName, Groups: append([]string(nil), leaf.Subject.Organization...)}, true, nil
	}
	return nil, false, nil
}

// StaticTokens authenticates bearer tokens listed in a file in the format of
// kube-apiserver's --token-auth-file: token,user,uid[,"group1,group2"].
type StaticTokens struct {
	byDigest map[[32]byte]*User
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
	s := &StaticTokens{byDigest: map[[32]byte]*User{}}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("token auth file %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) < 3 || rec[0] == "" || rec[1] == "" {
			return nil, fmt.Errorf("token auth file %s:%d: want token,user,uid[,groups]", path, line)
		}
		u := &User{Name: rec[1], UID: rec[2]}
		if len(rec) > 3 {
			for _, g := range strings.Split(rec[3], ",") {
				if g = strings.TrimSpace(g); g != "" {
					u.Groups = append(u.Groups, g)
				}
			}
		}
		d := sha256.Sum256([]byte(rec[0]))
		if _, dup := s.byDigest[d]; dup {
			return nil, fmt.Errorf("token auth file %s:%d: duplicate token", path, line)
		}
		s.byDigest[d] = u
	}
}

// Authenticate implements Authenticator.
func (s *StaticTokens) Authenticate(r *http.Request) (*User, bool, error) {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, false, nil
	}
	// Looking up by digest means lookup timing says nothing about the token.
	u, found := s.byDigest[sha256.Sum256([]byte(tok))]
	if !found {
		return nil, false, fmt.Errorf("%w: unknown bearer token", errBadCredentials)
	}
	cp := *u
	cp.Groups = append([]string(nil), u.Groups...)
	return &cp, true, nil
}

// AllowAuthenticated lets every authenticated caller reach every cluster;
// the member's RBAC, applied through impersonation, is then the only check.
// SubjectAccessReview-based authorization plugs in here.
type AllowAuthenticated struct{}

// Authorize implements Authorizer.
func (AllowAuthenticated) Authorize(context.Context, *User, string) (bool, string, error) {
	return true, "", nil
}
