// Package audit is the hub's audit log: one audit.k8s.io/v1 Event per
// request a front end carries (gateway /clusters/NAME/..., CONNECT), as
// JSON lines, written to a rotated file or stdout.
//
// What is recorded follows a kube-apiserver audit Policy, evaluated by
// k8s.io/apiserver's own evaluator against the same attributes a member's
// API server would see: the caller as the hub authenticated them, and the
// verb, resource and name k8s.io/apiserver's RequestInfoFactory reads from
// the path below /clusters/NAME. Levels None and Metadata are honoured;
// the hub never reads request or response bodies, so Request and
// RequestResponse record what Metadata records, and the event's level says
// Metadata. Stages: RequestReceived (unless the policy omits it; the
// default policy does), ResponseStarted for long-running requests
// (watches, exec, attach, port-forward, logs, proxy, every CONNECT) as
// kube-apiserver does, so a stream open for hours is on record from its
// start, ResponseComplete, and Panic.
//
// An event's auditID is the request id the hub sends the member in
// Backhaul-Request-Id and Audit-ID, which the member's kube-apiserver
// adopts as its own event's auditID: the two logs join on it. (CONNECT
// carries TLS end to end: its id reaches the agent, not the member.)
//
// Requests never wait for the disk: events go through a bounded queue to
// one writer goroutine (Logger.Run). When the queue is full the event is
// dropped and counted in backhaul_hub_audit_events_dropped_total; the
// request goes on.
package audit
