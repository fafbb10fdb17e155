// Package identity holds what hub, agent and backhaulctl must agree on about
// agent credentials: the bootstrap token format and how it is stored, and
// how an agent certificate names the one cluster it may serve; and the
// caller identities that are the hub's own.
package identity
