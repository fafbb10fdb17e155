package hub

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/hub/auth"
)

// hostHealth notices, from the caller reviews themselves, that the host
// cluster cannot answer: a replica that cannot authenticate or authorize
// its callers should leave the load balancer's rotation at once rather
// than when its directory entry goes stale.
type hostHealth struct {
	unavailable atomic.Int64 // unix nanos of the last ErrUnavailable
}

// hostUnavailableFor is how long one unanswered review keeps the replica
// not ready: long enough for a readiness probe to see it, short enough
// that a blip does not take it out for long.
const hostUnavailableFor = 5 * time.Second

func (h *hostHealth) note(err error) {
	if errors.Is(err, auth.ErrUnavailable) {
		h.unavailable.Store(time.Now().UnixNano())
	}
}

// ok says no review went unanswered lately.
func (h *hostHealth) ok() bool {
	t := h.unavailable.Load()
	return t == 0 || time.Since(time.Unix(0, t)) > hostUnavailableFor
}

func (h *hostHealth) authn(a auth.Authenticator) auth.Authenticator { return watchedAuthn{a, h} }
func (h *hostHealth) authz(a auth.Authorizer) auth.Authorizer       { return watchedAuthz{a, h} }

type watchedAuthn struct {
	auth.Authenticator
	h *hostHealth
}

func (w watchedAuthn) Authenticate(r *http.Request) (*auth.User, bool, error) {
	u, ok, err := w.Authenticator.Authenticate(r)
	w.h.note(err)
	return u, ok, err
}

type watchedAuthz struct {
	auth.Authorizer
	h *hostHealth
}

func (w watchedAuthz) Authorize(ctx context.Context, u *auth.User, cluster string) (bool, string, error) {
	ok, why, err := w.Authorizer.Authorize(ctx, u, cluster)
	w.h.note(err)
	return ok, why, err
}
