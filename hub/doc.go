// Package hub is the composition root of backhaul-hub: it builds the
// packages below from a Config (which Options builds from flags), wires
// them together in New, and runs their listeners in Run. It owns no logic
// of its own beyond that wiring, the admin endpoints and leadership
// gating.
//
//	session     tunnel endpoint, session registry, node routes, member dialer
//	auth        agent and caller authentication, host reviews, admission
//	frontend    L7 gateway, CONNECT proxy, status page
//	audit       the audit log of callers' requests (audit.k8s.io/v1 events)
//	enrollment  enroll/renew endpoints, bootstrap tokens, CA, host set-up
//	fleet       host cluster connection, Cluster informer and status, leadership
//	propagation the Propagation controller
//	ctl         backhaulctl
//
// docs/architecture.md draws these and a request's path through them.
//
// # Glossary
//
// The names in the code follow these meanings.
//
//   - cluster: a member cluster as the hub knows it, by name: registered
//     (a Cluster object in the host cluster, or a line of a static agent
//     token file) whether or not it is connected. "Unknown" means not
//     registered (404); "not connected" means registered without a
//     session (503).
//   - member: a cluster's API server and nodes as reached through its
//     tunnel; a "member client" talks to one (session.Dialer.Config).
//   - agent: the process in a member that dials the hub and serves the
//     streams the hub opens.
//   - session: one agent's live tunnel on this hub (session.Session); a
//     cluster may have several, the newest serves new streams.
//   - stream: one yamux stream in a session, opened by the hub for one
//     request or connection; it starts with a tunnel.Request header.
//   - route: a node address a node-mode agent advertised; CONNECT IP:PORT
//     goes to the session that holds it.
//   - caller: whoever sends a request to a front end (kubectl, client-go,
//     a controller, a kube-apiserver egress selector); authenticated, it
//     is an auth.User, impersonated in the member.
//   - admission: the one check before a stream is opened: the caller may
//     reach the cluster, the cluster is registered, a session serves it.
//   - host cluster: the Kubernetes cluster the hub keeps its state in
//     (Cluster and Propagation objects, tokens, CA) with --registry=kube.
package hub
