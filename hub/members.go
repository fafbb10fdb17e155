package hub

import (
	"context"

	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/propagation"
	"backhaul.io/backhaul/hub/session"
)

// members are the tunnels as the hub's own controllers see them during one
// leadership term: a client configuration per cluster, from the member
// dialer, acting as the hub's identity (auth.Hub) and reaching clusters
// held here or on a peer, and connection changes until the term ends.
type members struct {
	ctx    context.Context
	dialer *session.Dialer
	events *events
}

var _ propagation.Members = members{}

// Config implements propagation.Members.
func (m members) Config(cluster string) *rest.Config {
	return m.dialer.Config(cluster, auth.Hub().Impersonation())
}

// Connected implements propagation.Members.
func (m members) Connected(cluster string) bool { return m.dialer.Connected(cluster) }

// Watch implements propagation.Members.
func (m members) Watch(fn func(cluster string)) { m.events.watch(m.ctx, fn) }
