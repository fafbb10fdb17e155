package hub

import (
	"k8s.io/client-go/rest"
)

// Identity the hub's own controllers act as in members. Members grant it
// (onboard.sh binds the group) like any other user: the agent impersonates
// it, so the member's RBAC and audit log see who wrote.
const (
	HubUser        = "backhaul:hub"
	HubPusherGroup = "backhaul:propagators"
)

// MemberConfig returns a client configuration that reaches cluster's API
// server through its tunnel, acting as user. Calls fail with a
// *ClusterError wrapping ErrNotConnected while no agent is connected, and
// work again as soon as one is: a client built once stays usable.
func (s *Server) MemberConfig(cluster string, user *User) *rest.Config {
	cfg := &rest.Config{
		Host:      "http://" + cluster + hostSuffix,
		Transport: s.gateway.transport,
		UserAgent: "backhaul-hub",
		QPS:       -1, // the member's priority and fairness limits us, not client-go
	}
	if user != nil {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user.Name, UID: user.UID, Groups: user.Groups, Extra: user.Extra}
	}
	return cfg
}

// Members is the hub's tunnels as the propagation controller sees them:
// a client configuration per cluster acting as the hub's pusher identity,
// and connection state with change notifications.
type Members struct{ s *Server }

// Members returns the propagation controller's view of the tunnels.
func (s *Server) Members() Members { return Members{s} }

// Config implements propagation.Members.
func (m Members) Config(cluster string) *rest.Config {
	return m.s.MemberConfig(cluster, &User{Name: HubUser, Groups: []string{HubPusherGroup}})
}

// Connected implements propagation.Members.
func (m Members) Connected(cluster string) bool { return m.s.registry.Connected(cluster) }

// Watch implements propagation.Members.
func (m Members) Watch(fn func(cluster string)) { m.s.registry.Watch(fn) }
