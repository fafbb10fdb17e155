package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/yamux"

	"backhaul.io/backhaul/tunnel"
)

// Why a session ended: the label values of
// backhaul_hub_session_disconnects_total and what Cluster
// status.tunnel.lastDisconnectReason says. A closed set, so the series
// stays bounded and scripts can match on it.
const (
	// DisconnectAgentClosed: the agent said goodbye (it stopped or
	// restarted, or let go of a session it no longer wanted).
	DisconnectAgentClosed = "agent_closed"
	// DisconnectKeepalive: pings went unanswered; the agent or the path
	// to it died silently.
	DisconnectKeepalive = "keepalive_timeout"
	// DisconnectLost: the connection broke without a goodbye (the agent
	// was killed, a middlebox reset it) or carried garbage.
	DisconnectLost = "connection_lost"
	// DisconnectExpired: the session reached the end of its life, its
	// certificate's expiry or --session-max-age, and was replaced.
	DisconnectExpired = "expired"
	// DisconnectRevoked: the cluster was removed, or its credential
	// stopped being valid while it connected.
	DisconnectRevoked = "revoked"
	// DisconnectDrained: this replica drained (it is shutting down) and
	// asked the agent to move.
	DisconnectDrained = "drained"
	// DisconnectReplaced: the agent closed this session after it had
	// opened a newer one here.
	DisconnectReplaced = "replaced"
	// DisconnectShutdown: this replica closed it as it stopped.
	DisconnectShutdown = "hub_shutdown"
	// DisconnectDuplicate: the agent closed, at once, a session that
	// landed on a replica it already held (the load balancer chose it
	// again). Counted in the metric only: it is no loss.
	DisconnectDuplicate = "duplicate"
)

// duplicateWithin is how young a session closed by its agent, next to an
// older one of the same cluster, must be to count as a duplicate: an
// agent closes one as soon as the upgrade tells it the replica.
const duplicateWithin = 10 * time.Second

// Why the hub refused an agent whose credential names its cluster: what
// Cluster status.tunnel.lastRefusalReason says. A closed set of phrases
// for people (the cluster name is the only variable part).
const (
	RefusalCertExpired     = "certificate expired"
	RefusalCertNotYetValid = "certificate not yet valid (do the hub replicas' clocks disagree?)"
	RefusalRevoked         = "certificate revoked: it was issued to an earlier cluster of this name"
	RefusalNotRegistered   = "cluster not registered (removed?)"
	RefusalVersion         = "unsupported tunnel protocol version"
	RefusalNodeAddresses   = "node addresses outside the cluster's spec.nodeCIDRs"
	RefusalBusy            = "too many agents connecting at once (--max-handshakes); the agent retries later"
)

// RefusalOtherCluster is the reason for a certificate of cluster that
// asked to serve another cluster.
func RefusalOtherCluster(cluster string) string {
	return fmt.Sprintf("the agent's certificate is for cluster %s but it asked to serve another", cluster)
}

// AgentRefusal is an agent authentication failure whose credential
// proved which cluster it belongs to: a certificate the hub's CA issued
// that expired, or whose cluster was removed or re-created. The endpoint
// records it against that cluster (Cluster status.tunnel.lastRefusal*).
// An [AgentAuthenticator] wraps its error in one when it can; Err decides
// the answer (401, or 403 when it wraps ErrAgentForbidden) as before.
type AgentRefusal struct {
	Cluster string
	// Reason is one of the Refusal constants.
	Reason string
	Err    error
}

func (e *AgentRefusal) Error() string { return e.Err.Error() }
func (e *AgentRefusal) Unwrap() error { return e.Err }

// endCause says why ts.Serve returned err, when nothing on this side
// closed the session on purpose (that is marked on the session first).
func endCause(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil:
		return DisconnectShutdown
	case errors.Is(err, yamux.ErrKeepAliveTimeout):
		return DisconnectKeepalive
	case errors.Is(err, tunnel.ErrSessionClosed):
		// A close frame (io.EOF under the session): the agent's goodbye.
		return DisconnectAgentClosed
	default:
		return DisconnectLost
	}
}

// disconnectReason is why s ended, given the sessions of its cluster
// still registered here: what this side marked, else its cause, with an
// agent's goodbye told apart into a replaced session or a duplicate.
func disconnectReason(s *Session, remaining []*Session, now time.Time) string {
	reason := s.endReason()
	if reason == "" {
		reason = DisconnectLost
	}
	if reason != DisconnectAgentClosed {
		return reason
	}
	for _, o := range remaining {
		switch {
		case o.info.ID < s.info.ID && now.Sub(s.info.Since) < duplicateWithin:
			return DisconnectDuplicate
		case o.info.ID > s.info.ID:
			return DisconnectReplaced
		}
	}
	return reason
}
