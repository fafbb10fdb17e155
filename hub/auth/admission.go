package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"backhaul.io/backhaul/hub/session"
)

// Clusters says which clusters are registered, so admission can tell an
// unknown cluster (404) from a disconnected one (503).
type Clusters interface {
	Known(cluster string) bool
}

// Refusal is admission's answer when a caller may not have a stream: the
// HTTP status, the backhaul_hub_errors_total reason and a message for the
// caller. The front end that asked answers it and counts it.
type Refusal struct {
	Code    int
	Reason  string
	Message string
	// RetryAfter, when set, tells the caller to try again then (the host
	// could not answer; another replica may).
	RetryAfter time.Duration
}

func (r *Refusal) Error() string { return r.Message }

func refuse(code int, reason, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Routes finds how a cluster is reached now (session.Dialer).
type Routes interface {
	Route(cluster string) (*session.Route, error)
}

// Admission is the one check every front end makes before a stream is
// opened: the caller may reach the cluster, the cluster is registered, and
// an agent of it is connected to this replica or to a peer. It returns the
// route it found, so the front end opens the stream along exactly that one.
type Admission struct {
	authz    Authorizer
	clusters Clusters
	routes   Routes
}

// NewAdmission checks callers with authz against clusters and routes.
func NewAdmission(authz Authorizer, clusters Clusters, routes Routes) *Admission {
	return &Admission{authz: authz, clusters: clusters, routes: routes}
}

// Admit returns the route that carries u's stream to cluster.
func (a *Admission) Admit(ctx context.Context, u *User, cluster string) (*session.Route, *Refusal) {
	if ref := a.check(ctx, u, cluster); ref != nil {
		return nil, ref
	}
	r, err := a.routes.Route(cluster)
	if err != nil {
		return nil, refuse(http.StatusServiceUnavailable, session.ReasonNotConnected, "cluster %s is not connected", cluster)
	}
	return r, nil
}

// AdmitRoute admits u's stream along routed, the route a node address
// chose.
func (a *Admission) AdmitRoute(ctx context.Context, u *User, routed *session.Route) (*session.Route, *Refusal) {
	if ref := a.check(ctx, u, routed.Cluster()); ref != nil {
		return nil, ref
	}
	return routed, nil
}

// Allowed says whether u may reach cluster, for pages that list clusters;
// an error counts as no.
func (a *Admission) Allowed(ctx context.Context, u *User, cluster string) bool {
	ok, _, err := a.authz.Authorize(ctx, u, cluster)
	return ok && err == nil
}

func (a *Admission) check(ctx context.Context, u *User, cluster string) *Refusal {
	if ref := refuseReserved(u); ref != nil {
		return ref
	}
	allowed, why, err := a.authz.Authorize(ctx, u, cluster)
	switch {
	case errors.Is(err, ErrUnavailable):
		ref := refuse(http.StatusServiceUnavailable, session.ReasonForbidden, "cannot authorize %q for cluster %s now: the hub's host cluster is unavailable", u.Name, cluster)
		ref.RetryAfter = time.Second
		return ref
	case err != nil:
		return refuse(http.StatusInternalServerError, session.ReasonForbidden, "authorizing %q for cluster %s: %v", u.Name, cluster, err)
	case !allowed:
		return refuse(http.StatusForbidden, session.ReasonForbidden, "user %q cannot reach cluster %s through the hub: %s", u.Name, cluster, why)
	case !a.clusters.Known(cluster):
		return refuse(http.StatusNotFound, session.ReasonUnknownCluster, "cluster %q not found", cluster)
	}
	return nil
}
