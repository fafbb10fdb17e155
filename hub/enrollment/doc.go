// Package enrollment turns a one-use bootstrap token into an agent
// certificate and keeps agents' certificates renewed: the enrollment
// endpoints (enroll, renew, onboarding status) and the rate limits on the
// unauthenticated ones, the bootstrap tokens backhaulctl stores in the host
// cluster (read through an informer of only those Secrets), the CA that
// signs agent
// certificates and the hub's own serving certificate, and the set-up of
// those objects in the host cluster.
//
// The wire format (paths, request and response bodies, token syntax) is in
// package pkg/identity, shared with the agent and backhaulctl. This package
// builds on auth (agent certificates) and session (connection status); it
// must not import the front ends, fleet or propagation.
package enrollment
