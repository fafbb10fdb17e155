// Package frontend holds what callers speak to: the L7 gateway
// (https://HUB/clusters/NAME/...) and the CONNECT proxy (L4, TCP or a
// Unix socket); the status page is hub/statuspage. Each authenticates the
// caller, asks admission for the session that may carry the request, and
// hands the stream to the member dialer:
//
//	front end → auth.Admission.Admit → session.Dialer → tunnel.Session.Open → agent
//
// Refusals are Kubernetes Status objects (gateway) or a status line
// (CONNECT) with a precise code, and are counted by reason in
// backhaul_hub_errors_total. Every request, refused or not, is audited
// (hub/audit). The package builds on auth and session (and recording, for
// exec and attach sessions, and audit) and must not import
// enrollment, fleet or propagation.
package frontend
