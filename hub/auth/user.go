package auth

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/identity"
)

// User is the identity of a caller: who a request through the hub is
// from, as members will see it through impersonation.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Identity the hub's own controllers act as in members (identity.HubUser
// and identity.HubGroup); only the hub's own stream kind carries it.
const (
	HubUser        = identity.HubUser
	HubPusherGroup = identity.HubGroup
)

// Hub is the hub's own identity in members.
func Hub() *User { return &User{Name: HubUser, Groups: []string{HubPusherGroup}} }

// Impersonation is u as client-go impersonates it.
func (u *User) Impersonation() rest.ImpersonationConfig {
	return rest.ImpersonationConfig{UserName: u.Name, UID: u.UID, Groups: u.Groups, Extra: u.Extra}
}

// Copy is a deep copy of u.
func (u *User) Copy() *User {
	cp := &User{Name: u.Name, UID: u.UID, Groups: slices.Clone(u.Groups)}
	if u.Extra != nil {
		cp.Extra = make(map[string][]string, len(u.Extra))
		for k, v := range u.Extra {
			cp.Extra[k] = slices.Clone(v)
		}
	}
	return cp
}

// Authenticator finds the caller of a request. ok is false when the request
// carries no credentials this authenticator understands; err is set when it
// carries credentials that are wrong (wrapping ErrBadCredentials) or the
// answer could not be had (wrapping ErrUnavailable).
type Authenticator interface {
	Authenticate(r *http.Request) (u *User, ok bool, err error)
}

// Authorizer decides whether u may reach cluster through the hub. The
// member's own RBAC decides everything after that. Errors wrap
// ErrUnavailable when the decision could not be had.
type Authorizer interface {
	Authorize(ctx context.Context, u *User, cluster string) (allowed bool, reason string, err error)
}

var (
	// ErrBadCredentials: the request's credentials are wrong.
	ErrBadCredentials = errors.New("invalid credentials")
	// ErrUnavailable means the hub's host cluster could not answer a
	// TokenReview or SubjectAccessReview. It says nothing about the
	// caller's credentials, so a front end answers 503 rather than 401/403,
	// and the caller should retry.
	ErrUnavailable = errors.New("host cluster authentication/authorization unavailable")
)

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

// AllowAuthenticated lets every authenticated caller reach every cluster;
// the member's RBAC, applied through impersonation, is then the only check.
type AllowAuthenticated struct{}

// Authorize implements Authorizer.
func (AllowAuthenticated) Authorize(context.Context, *User, string) (bool, string, error) {
	return true, "", nil
}

// Bearer returns the token of an "Authorization: Bearer TOKEN" value.
func Bearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	t := strings.TrimSpace(h[len(p):])
	return t, t != ""
}
