// Package ctl is backhaulctl, the operator CLI: it registers member clusters
// with the hub (a Cluster object plus a short-lived bootstrap token Secret
// in the hub's host cluster), lists their tunnel and readiness status,
// removes them, writes a kubeconfig that reaches every member through the
// hub's gateway, and diagnoses why a member is not connected or slow.
//
// Every command runs in-process against an Env (output writers, a client
// constructor, a clock) so tests drive the real command tree with a fake
// client. cmd/backhaulctl only wires Env to the process. It talks to the
// host cluster's API and imports no other hub package: what it shares with
// the hub (token format, hub-info keys) is in pkg/identity.
package ctl
