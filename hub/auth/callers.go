package auth

import (
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
			return nil, false, fmt.Errorf("%w: client certificate has no common name", ErrBadCredentials)
		}
		return &User{Name: leaf.Subject.CommonName, Groups: append([]string(nil), leaf.Subject.Organization...)}, true, nil
	}
	return nil, false, nil
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
