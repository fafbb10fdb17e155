// Package v1alpha1 holds the backhaul.io/v1alpha1 API: Cluster, the
// registry of member clusters, and Propagation, an object pushed to the
// members a placement selects. Both live in the hub's host cluster.
//
// +kubebuilder:object:generate=true
// +groupName=backhaul.io
package v1alpha1
