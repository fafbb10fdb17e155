package hub

import (
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/session"
)

// members are the tunnels as the hub's own controllers see them: a client
// configuration per cluster, from the member dialer, acting as the hub's
// identity (auth.Hub), and the registry's connection state.
type members struct {
	dialer   *session.Dialer
	sessions *session.Registry
}

var _ propagation.Members = members{}

// Config implements propagation.Members.
func (m members) Config(cluster string) *rest.Config {
	return m.dialer.Config(cluster, auth.Hub().Impersonation())
}

// Connected implements propagation.Members.
func (m members) Connected(cluster string) bool { return m.sessions.Connected(cluster) }

// Watch implements propagation.Members.
func (m members) Watch(fn func(cluster string)) { m.sessions.Watch(fn) }
