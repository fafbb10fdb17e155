package propagation

import (
	"crypto/sha256"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// isOwnEntry says whether a managedFields entry is the controller's
// server-side apply of a copy.
func isOwnEntry(e metav1.ManagedFieldsEntry) bool {
	return e.Manager == FieldManager && e.Operation == metav1.ManagedFieldsOperationApply && e.Subresource == ""
}

// ownedFields digests the set of fields the controller owns in a copy.
// Server-side apply keeps it exactly: when someone else changes a field
// the controller applied (kubectl edit, another apply with force, a
// controller writing spec) that field leaves the controller's set, and
// when they only add fields of their own or write status, the set stays.
// So a changed digest is drift, and status churn (a Deployment's) is not.
func ownedFields(entries []metav1.ManagedFieldsEntry) [sha256.Size]byte {
	for _, e := range entries {
		if isOwnEntry(e) && e.FieldsV1 != nil {
			return sha256.Sum256(e.FieldsV1.GetRawBytes())
		}
	}
	return [sha256.Size]byte{}
}

// copyChanged is the member watches' callback (it must not block): a copy
// of a Propagation was added, changed or deleted in a member. Drift from
// what the controller applied there (fields it owned taken over, or the
// copy deleted) is reverted: the record is dropped, so the next sync
// writes the copy again, and the Propagation is queued. Events the
// controller's own writes cause change nothing.
func (r *reconciler) copyChanged(ev copyEvent) {
	rec, ok, inflight := r.applied.observe(ev.cluster, ev.prop)
	switch {
	case inflight:
		// The controller is writing this copy: compared when it is done.
	case !ok:
		// A copy the controller has no record of: listed after the hub
		// started or the tunnel returned, left by a renamed template, or
		// in a cluster that left the placement. The Propagation decides.
		if !ev.deleted {
			r.wakeProp(ev.prop)
		}
	case rec.id != ev.id:
		// Another object of this Propagation than the one applied there:
		// a leftover of an earlier template.
		if !ev.deleted {
			r.wakeProp(ev.prop)
		}
	case ev.deleted || ownedFields(ev.obj.ManagedFields) != rec.fields:
		r.drifted(ev.cluster, ev.prop, ev.id, ev.deleted)
	}
}

// drifted reverts a copy someone else changed or deleted.
func (r *reconciler) drifted(cluster string, prop types.NamespacedName, id objectID, deleted bool) {
	r.applied.forget(cluster, prop)
	r.metrics.drifted()
	what := "changed"
	if deleted {
		what = "deleted"
	}
	r.log.Info("copy "+what+" in the member; applying it again", "propagation", prop, "cluster", cluster, "object", id.String())
	r.wakeProp(prop)
}

// recheck compares, after an apply during which a watch event arrived,
// the copy as the watch last saw it with what was applied.
func (r *reconciler) recheck(cluster string, prop types.NamespacedName, gvr schema.GroupVersionResource, rec appliedRecord) {
	o, ok := r.watches.current(cluster, gvr, rec.id)
	if !ok || o.UID != rec.uid {
		return
	}
	if ownedFields(o.ManagedFields) != rec.fields {
		r.drifted(cluster, prop, rec.id, false)
	}
}

// wakeProp queues prop from a callback that must not block.
func (r *reconciler) wakeProp(prop types.NamespacedName) {
	r.hand(func() { r.wakeProps[prop] = struct{}{} })
}
