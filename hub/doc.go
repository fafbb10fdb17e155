// Package hub is the Backhaul hub server: the tunnel endpoint agents dial,
// the registry of their sessions, and the L7 gateway that serves
// https://HUB/clusters/{name}/... by sending each request through the
// cluster's tunnel with the caller's identity attached for impersonation.
package hub
