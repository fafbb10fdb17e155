// Package peer connects hub replicas to each other, so that every replica
// serves every cluster: a request that reaches a replica without a session
// of its cluster is forwarded to a replica that has one.
//
// Each pair of replicas keeps one tunnel (the same websocket + yamux
// session agents use, package tunnel), dialled by the replica whose name
// sorts first, authenticated both ways by replica certificates from the hub
// CA (pkg/identity's backhaul://replica/NAME). Either side forwards on it
// with tunnel.KindForward streams; the receiving side opens the inner
// stream on its own agent session ([session.Registry.OpenLocalEarly]) and
// relays between the two (tunnel.Incoming.Relay), so bytes sent early
// reach the agent without waiting for a reply at each hop. A replica trusts forwarded streams only on these connections,
// so the caller's identity, established once on the first replica, is
// never re-established from anything a caller sent.
//
// Which replica holds which cluster comes from the session directory
// (package fleet), handed in with [Manager.Update]; the Manager answers the
// dialer's questions ([session.Peers]) from it and from which connections
// are up. It builds on session and must not import auth, frontend,
// enrollment, fleet or propagation.
package peer
