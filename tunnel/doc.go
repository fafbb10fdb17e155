// Package tunnel is Backhaul's transport: one websocket connection, dialled out
// by an agent to the hub, carrying one yamux session on which either side may
// open streams. It has no Kubernetes imports and can be used on its own.
//
// # Connection
//
// The agent sends GET /v1/tunnel with the websocket upgrade, the subprotocol
// [Subprotocol] (which names the protocol version), compression off, and its
// credentials in ordinary HTTP headers. A refused upgrade answers a plain HTTP
// status and a one-line reason; the dialler returns it as a [*HandshakeError].
// A replica that is draining or overloaded answers 503 (or 429) with
// Retry-After in seconds (other forms are ignored); the dialler reports it
// as [HandshakeError.RetryAfter], and the agent waits at least that long
// plus a random share of up to half of it ([Backoff.RetryAfter]), so agents
// turned away together do not come back together.
// After the upgrade the websocket carries binary messages only and is turned
// into a net.Conn in exactly one place ([newSession]), under yamux.
//
// The hub may run as several replicas behind one address, each serving
// every cluster. Its 101 answer then names the replica that accepted the
// session in [HeaderHubReplica] and says how many replicas serve in
// [HeaderHubReplicas] (a decimal integer); the dialler reads them as
// [Session.Replica] and [Session.Replicas], and an agent uses them to keep
// its sessions on distinct replicas. Both headers are optional: a hub that
// sends no replica name is one replica.
//
// # Stream header
//
// Every stream starts with a request written by the side that opened it:
//
//	0       1       2       3       4               8
//	+-------+-------+-------+-------+---------------+--------/ /--------+------/ /------+
//	|version| kind  | idLen |addrLen| timeout (ms)  | request id (idLen) | address        |
//	+-------+-------+-------+-------+---------------+--------/ /--------+------/ /------+
//
// version is [Version]; kind is a [Kind]; timeout is the dial budget the
// opener grants, big-endian milliseconds (0: the acceptor's default); the
// request id (at most [MaxRequestIDLen] printable ASCII bytes) ties hub and
// agent logs together; the address is host:port for [KindTCP], the target
// for [KindForward] (see below) and empty for [KindAPIServer],
// [KindHubAPIServer], [KindAPIServerTCP] and [KindDrain]. The whole request is at most
// [MaxRequestLen] bytes.
//
// The acceptor answers before any payload:
//
//	0       1       2               4
//	+-------+-------+---------------+-------/ /-------+
//	|version| code  | msgLen        | message (msgLen) |
//	+-------+-------+---------------+-------/ /-------+
//
// code is a [Code] ([CodeOK] or a typed failure) and the message, at most
// [MaxMessageLen] bytes, says why. After [CodeOK] the stream is a plain byte
// pipe; after any other code the acceptor closes it.
//
// The opener may send payload right behind its request, before the reply
// ([Session.OpenEarly]): an acceptor reads exactly the request, and the
// payload only after it answered [CodeOK]; on a refusal it never reads
// further, and what the opener sent is dropped with the stream. This has
// been so since version 1, so it needs no new version or feature: the hub
// sends reads and upgrades this way, saving a round trip per new stream.
//
// # The hub's own identity
//
// The gateway's requests for callers travel on [KindAPIServer] streams; the
// hub's own (propagation, probes) on [KindHubAPIServer] streams, the only
// ones on which an agent accepts an identity in the reserved "backhaul:"
// space. An agent announces that it knows the kind with
// [HeaderAgentFeatures] on its upgrade; a hub opens [KindAPIServer] towards
// an agent that did not (an agent from before the kind, which does not
// refuse reserved identities either).
//
// # Draining
//
// A hub replica that is going away opens a [KindDrain] stream on each agent
// session it holds ([Session.Drain]); the timeout field carries the grace
// period (0: [DefaultDrainGrace]) and the address is empty. No payload
// follows: the agent answers [CodeOK] and closes the stream, stops counting
// the session towards the sessions it keeps, dials a replacement (the
// draining replica refuses new upgrades with 503 and Retry-After, so the
// load balancer's next pick lands elsewhere), and closes the drained
// session once it carries no streams, or when the grace has passed.
// An agent that predates the kind answers [CodeBadRequest] like for any
// unknown kind; the hub tolerates that and its session simply ends when the
// replica closes it.
//
// # Forwarding between hub replicas
//
// Hub replicas keep one peer session per pair, the same websocket and
// yamux tunnel as an agent's, authenticated both ways by certificates of
// the hub's CA. A replica that holds no session of a cluster opens a
// [KindForward] stream to a replica that does; its address names the
// cluster and the inner request (CLUSTER/KIND, or CLUSTER/2/HOST:PORT for
// [KindTCP]). The receiving replica opens the inner stream on its own agent
// session of the cluster, answers with the agent's reply (or
// [CodeUnavailable] when it holds no session of the cluster any more, so
// the opener tries another), and joins the two streams. A forwarded stream
// is never forwarded again.
//
// # Liveness
//
// yamux pings every [Config.KeepAliveInterval] and closes the session when a
// ping is not answered within [Config.KeepAliveTimeout], so a dead or half-open
// peer is noticed on both sides within their sum. Flow control is yamux's
// per-stream window, so a stalled reader holds back only its own stream.
package tunnel
