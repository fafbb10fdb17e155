package hub

import (
	"context"
	"fmt"
	"net/http"

	"backhaul.io/backhaul/tunnel"
)

// refusal is a front end's answer when a caller may not have a stream.
type refusal struct {
	code   int
	reason string // errors_total label
	msg    string
}

// admission is the check both front ends (gateway and CONNECT) make before
// opening a stream: the caller may reach the cluster, the cluster exists,
// and an agent of it is connected.
type admission struct {
	authz    Authorizer
	clusters ClusterSource
	registry *Registry
	metrics  *Metrics
}

// admit returns the session for u's stream to cluster. sess, when not nil,
// is the session a node route already chose. A refusal is counted.
func (a admission) admit(ctx context.Context, u *User, cluster string, sess *tunnel.Session) (*tunnel.Session, *refusal) {
	refuse := func(code int, reason, format string, args ...any) (*tunnel.Session, *refusal) {
		a.metrics.failure(reason)
		return nil, &refusal{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
	}
	allowed, why, err := a.authz.Authorize(ctx, u, cluster)
	if err != nil {
		if authStatus(err, 0) == http.StatusServiceUnavailable {
			return refuse(http.StatusServiceUnavailable, reasonForbidden, "cannot authorize %q for cluster %s now: the hub's host cluster is unavailable", u.Name, cluster)
		}
		return refuse(http.StatusInternalServerError, reasonForbidden, "authorizing %q for cluster %s: %v", u.Name, cluster, err)
	}
	if !allowed {
		return refuse(http.StatusForbidden, reasonForbidden, "user %q cannot reach cluster %s through the hub: %s", u.Name, cluster, why)
	}
	if !a.clusters.Known(cluster) {
		return refuse(http.StatusNotFound, reasonUnknownCluster, "cluster %q not found", cluster)
	}
	if sess != nil {
		return sess, nil
	}
	sess, err = a.registry.Get(cluster)
	if err != nil {
		return refuse(http.StatusServiceUnavailable, reasonNotConnected, "cluster %s is not connected", cluster)
	}
	return sess, nil
}
