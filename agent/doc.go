// Package agent is the member side of Backhaul: it keeps a tunnel to the hub
// and serves the streams the hub opens — the member's API server, with the
// hub's caller impersonated, and TCP dials its allowlist permits.
package agent
