package propagation

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// leave removes the copy from cluster t, which left the placement. It
// returns nil when nothing is left to do there, or an entry saying what
// waits.
func (r *reconciler) leave(ctx context.Context, pl *plan, p *v1alpha1.Propagation, t target) *v1alpha1.ClusterPropagationStatus {
	e, done := r.remove(ctx, pl, t, &p.Status)
	if done {
		return nil
	}
	return e
}

// remove deletes the copy in cluster t. done means nothing is left there
// (deleted, never there, or the Cluster is gone); otherwise the entry says
// what waits.
func (r *reconciler) remove(ctx context.Context, pl *plan, t target, st *v1alpha1.PropagationStatus) (*v1alpha1.ClusterPropagationStatus, bool) {
	if t.cluster == nil {
		// The Cluster was deleted: its credentials are revoked and it is
		// no longer reachable. Nothing more to do there.
		return nil, true
	}
	prev := entryFor(st, t.name)
	rec, hasRec := r.applied.get(t.name, pl.key)
	// Not listed: it was Applied at the generation status reports.
	e := &v1alpha1.ClusterPropagationStatus{Cluster: t.name, State: v1alpha1.StatePending,
		ObservedGeneration: lastGeneration(rec, hasRec, prev, st.ObservedGeneration)}
	if !r.members.Connected(t.name) {
		if !hasRec && !mayHoldCopy(st, prev) {
			return nil, true
		}
		e.Message = fmt.Sprintf("cluster %s is not connected; its copy is deleted when it returns", t.name)
		return e, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.MemberTimeout)
	defer cancel()
	// The watch events of these deletes are the controller's own, not
	// drift.
	r.applied.begin(t.name, pl.key)
	defer r.applied.end(t.name, pl.key)
	var n int
	var err error
	if held := r.held(t.name, pl.key, rec, hasRec); len(held) > 0 {
		var m member
		if m, err = r.clients.get(t.name); err == nil {
			n, err = deleteCopies(ctx, m, held)
		}
	} else {
		// Nothing known of this cluster's copy (the hub restarted, and the
		// watch has not listed): look for the one the template renders.
		n, err = r.deleteCopy(ctx, pl, t)
	}
	if err != nil {
		r.log.Warn("delete failed", "propagation", pl.key, "cluster", t.name, "error", err)
		r.metrics.synced(ResultFailed)
		e.State, e.Message = v1alpha1.StateFailed, truncate("delete: "+err.Error(), maxMessage)
		return e, false
	}
	r.applied.forget(t.name, pl.key)
	for range n {
		r.metrics.synced(ResultDeleted)
	}
	r.log.Debug("deleted copy", "propagation", pl.key, "cluster", t.name, "deleted", n)
	return nil, true
}

// held returns the copies of prop in cluster the controller knows of: the
// one rec records and those the member's watches hold.
func (r *reconciler) held(cluster string, prop types.NamespacedName, rec appliedRecord, hasRec bool) []copyRef {
	var out []copyRef
	if hasRec {
		out = append(out, copyRef{id: rec.id, version: rec.version, uid: rec.uid})
	}
	for _, c := range r.watches.copies(cluster, prop) {
		if !hasRec || c.id != rec.id {
			out = append(out, c)
		}
	}
	return out
}

// deleteCopy deletes the object pl renders for t, if it is there and is
// ours, and returns how many it deleted (0 or 1).
func (r *reconciler) deleteCopy(ctx context.Context, pl *plan, t target) (int, error) {
	m, err := r.clients.get(t.name)
	if err != nil {
		return 0, err
	}
	mp, err := m.Mapping(pl.gvk)
	if meta.IsNoMatchError(err) {
		return 0, nil // the kind is gone, and its objects with it
	}
	if err != nil {
		return 0, err
	}
	namespaced := mp.Scope.Name() == meta.RESTScopeNameNamespace
	obj, err := pl.render(t, namespaced, nil)
	if err != nil {
		// The overrides do not apply (any more): the copy, if any, has the
		// template's identity.
		obj, err = pl.withoutOverrides().render(t, namespaced, nil)
		if err != nil {
			return 0, err
		}
	}
	if gvk := obj.GroupVersionKind(); gvk != pl.gvk {
		if mp, err = m.Mapping(gvk); meta.IsNoMatchError(err) {
			return 0, nil
		} else if err != nil {
			return 0, err
		}
	}
	cur, err := m.Get(ctx, mp, obj.GetNamespace(), obj.GetName())
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if !owned(cur, pl.key) {
		r.log.Info("not deleting an object this propagation does not own", "propagation", pl.key, "cluster", t.name,
			"kind", cur.GetKind(), "namespace", cur.GetNamespace(), "name", cur.GetName())
		return 0, nil
	}
	if err := m.Delete(ctx, mp, cur.GetNamespace(), cur.GetName(), cur.GetUID()); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	return 1, nil
}

// finalize deletes every copy of a Propagation being deleted, then removes
// the finalizer. Clusters that may hold a copy but are not connected hold
// the finalizer until they return or their Cluster is deleted.
func (r *reconciler) finalize(ctx context.Context, p *v1alpha1.Propagation) (reconcile.Result, error) {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if !controllerutil.ContainsFinalizer(p, Finalizer) {
		return reconcile.Result{}, nil
	}
	clusters, err := r.clusters(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	pl, err := compile(p)
	if err != nil {
		// Delete what the template identifies, whatever else is wrong.
		tmpl, gvk, terr := parseTemplate(p.Spec.Template)
		if terr != nil {
			r.log.Warn("cannot identify the copies of a deleted propagation; leaving them", "propagation", key, "error", err)
			return reconcile.Result{}, r.removeFinalizer(ctx, p)
		}
		pl = &plan{key: key, generation: p.Generation, template: tmpl, gvk: gvk}
		if sel, serr := compileSelection(p.Spec.Placement.ClusterSelection); serr == nil {
			pl.placement = sel
		}
	}
	var todo []target
	seen := map[string]bool{}
	for _, t := range place(pl.placement, clusters) {
		seen[t.name] = true
		todo = append(todo, t)
	}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			todo = append(todo, target{name: name, cluster: clusters.byName(name)})
		}
	}
	for _, e := range p.Status.Clusters {
		add(e.Cluster)
	}
	for _, c := range r.holders(key) {
		add(c)
	}
	r.index.set(key, targetNames(todo, nil))
	entries := make([]*v1alpha1.ClusterPropagationStatus, len(todo))
	r.parallel(len(todo), func(i int) {
		entries[i], _ = r.remove(ctx, pl, todo[i], &p.Status)
	})
	var waiting []v1alpha1.ClusterPropagationStatus
	failures := map[string]string{}
	for _, e := range entries {
		if e != nil {
			waiting = append(waiting, *e)
			if e.State == v1alpha1.StateFailed {
				failures[e.Cluster] = e.Message
			}
		}
	}
	if len(waiting) > 0 {
		if err := r.writeStatus(ctx, p, deletingStatus(p, waiting)); err != nil {
			return reconcile.Result{}, err
		}
		if len(failures) > 0 {
			return reconcile.Result{}, &SyncError{Failures: failures}
		}
		return r.resync(), nil
	}
	if err := r.removeFinalizer(ctx, p); err != nil {
		return reconcile.Result{}, err
	}
	r.index.drop(key)
	r.applied.forgetProp(key)
	r.log.Debug("deleted all copies", "propagation", key)
	return reconcile.Result{}, nil
}

func (r *reconciler) removeFinalizer(ctx context.Context, p *v1alpha1.Propagation) error {
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(p, Finalizer)
	if err := r.host.Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}
