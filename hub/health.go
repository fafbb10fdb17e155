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
// than when its directory entry goes stale. It comes back only when the
// host answers again: once out of rotation no caller reviews arrive to
// say so (and a review answered from the cache proves nothing), so run
// asks the host itself.
type hostHealth struct {
	failed atomic.Int64 // unix nanos of the last ErrUnavailable not yet cleared; 0: healthy
	// probe asks the host whether it answers; nil without a host cluster,
	// where a failure clears itself after hostUnavailableFor.
	probe func(context.Context) error
}

// hostUnavailableFor is how long one unanswered review keeps a replica
// without a host probe not ready: long enough for a readiness probe to see
// it, short enough that a blip does not take it out for long.
const hostUnavailableFor = 5 * time.Second

// hostProbeEvery is how often run asks the host while a failure stands,
// and how long one ask may take.
const hostProbeEvery = time.Second

func (h *hostHealth) note(err error) {
	if errors.Is(err, auth.ErrUnavailable) {
		h.failed.Store(time.Now().UnixNano())
	}
}

// ok says no review has gone unanswered since the host last answered.
func (h *hostHealth) ok() bool {
	t := h.failed.Load()
	return t == 0 || (h.probe == nil && time.Since(time.Unix(0, t)) > hostUnavailableFor)
}

// run asks the host every hostProbeEvery while a failure stands, and
// clears it when the host answers (unless a newer failure came in
// meanwhile). It returns when ctx ends; without a probe it does nothing.
func (h *hostHealth) run(ctx context.Context) {
	if h.probe == nil {
		return
	}
	tick := time.NewTicker(hostProbeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		failed := h.failed.Load()
		if failed == 0 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, hostProbeEvery)
		err := h.probe(pctx)
		cancel()
		if err == nil {
			h.failed.CompareAndSwap(failed, 0)
		}
	}
}

// hostReachable says this replica can reach its host cluster: no caller
// review went unanswered since the host last answered, and its directory
// writes go through. Readiness and keep-alive both follow it.
func (s *Server) hostReachable() bool {
	return s.health.ok() && (s.directory == nil || s.directory.HostReachable())
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
