// Package session is the hub's side of agent tunnels: the tunnel endpoint
// agents dial (/v1/tunnel), the registry of their live sessions by cluster
// and the node routes node-mode agents advertise, and the member dialer —
// the one way anything in the hub opens a stream to a member.
//
// Everything else in the hub builds on this package, so it must not import
// any of them (auth, frontend, enrollment, fleet, propagation, the hub
// itself); agent authentication plugs in as an [AgentAuthenticator].
//
// A request's path through it: a front end asks the [Registry] for the
// [Session] that serves a cluster (through admission), then asks the
// [Dialer] to open a stream of some kind on that session ([Dialer.Open]) or
// to carry HTTP to the member's API server over it ([Dialer.HTTP]). The
// hub's controllers use [Dialer.Config], which finds the cluster's session
// at each request.
package session
