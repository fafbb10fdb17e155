// Package harness starts real, network-isolated "member clusters" for
// Backhaul's end-to-end tests.
//
// A member is an etcd plus a real kube-apiserver running inside its own Linux
// network namespace. The namespace is linked to the root namespace by a veth
// pair on 10.251.<index>.0/30 and its nftables input chain drops every inbound
// NEW connection, so a hub running in the root namespace can reach the member's
// apiserver only through a tunnel that an agent inside the namespace dials out.
// For fleet-sized runs, members may instead share one etcd ([StartSharedEtcd]),
// each API server under its own key prefix, still in its own namespace.
//
// The package needs root, iproute2 (ip), nftables (nft), etcd and the
// kube-apiserver and kubectl binaries (see [LocateBinaries]). It only ever
// talks to loopback and to the addresses of namespaces it creates.
//
// Namespace names and subnet indexes are guarded by flock(2) lock files in
// [LockDir], so concurrent test binaries (go test ./... runs packages in
// parallel) get a clear error instead of tearing down each other's
// namespaces, and [CleanupStale] only removes namespaces no live process owns.
package harness
