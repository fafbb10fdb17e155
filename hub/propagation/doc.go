// Package propagation is the hub's Propagation controller: it writes one
// object, adjusted per cluster, into every member cluster a Propagation
// places it on, through the members' tunnels.
//
// For each Propagation the controller
//
//   - resolves the placement against the Cluster objects in the hub's host
//     cluster (named clusters ∪ clusters the selector matches);
//   - divides spec.replicas among the placed clusters that are Ready
//     ([Divide]);
//   - renders the object for each cluster: the template, its namespace
//     defaulted to the Propagation's for namespaced kinds (scope comes from
//     the member's own discovery), the overrides (RFC 6902) in order, the
//     cluster's replicas, and the labels and annotations that tie the copy
//     to its Propagation ([LabelPropagation], [AnnotationPropagation],
//     [AnnotationGeneration]);
//   - server-side applies it (field manager [FieldManager], force) as the
//     hub's pusher identity, which also reverts drift on the periodic
//     resync;
//   - deletes the copy from clusters that leave the placement, and from all
//     clusters when the Propagation is deleted (finalizer [Finalizer]);
//   - reports per-cluster state (Applied, Pending, Failed) and a Ready
//     condition in the Propagation's status.
//
// A cluster whose tunnel is down is Pending: nothing is written to it, its
// copy is neither updated nor deleted, and it gets the then current
// generation as soon as its tunnel returns ([Members.Watch]). A copy is
// never written with an older generation than the one status records.
//
// It imports no other hub package: members are reached through the
// [Members] interface (the hub gives it the member dialer's clients; tests
// give direct connections), and the host cluster through the manager.
package propagation

// Names the controller writes into member objects and Propagations.
const (
	// FieldManager is the server-side apply field manager in members.
	FieldManager = "backhaul"
	// Finalizer holds a Propagation until its copies are deleted.
	Finalizer = "backhaul.io/propagation"
	// LabelPropagation marks a copy with "<namespace>.<name>" of its
	// Propagation (shortened with a hash when longer than a label value
	// may be), so `kubectl get -l` finds the copies in a member.
	LabelPropagation = "backhaul.io/propagation"
	// AnnotationPropagation holds "<namespace>/<name>" of the Propagation
	// that owns the copy: the exact identity checked before deleting.
	AnnotationPropagation = "backhaul.io/propagation"
	// AnnotationGeneration is the Propagation generation the copy was
	// rendered from.
	AnnotationGeneration = "backhaul.io/propagation-generation"
)
