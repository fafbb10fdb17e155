package propagation

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// sync brings cluster t up to date and returns its status entry, the
// object it rendered there (nil when it rendered none), and the error
// that made it Failed. A copy applied before and unchanged since is not
// written again; on a full resync it is written again only if the
// member's watch cannot vouch that it is as applied.
func (r *reconciler) sync(ctx context.Context, s *pass, t target) (*v1alpha1.ClusterPropagationStatus, *v1alpha1.ObjectReference, error) {
	key := s.pl.key
	prev := entryFor(&s.p.Status, t.name)
	rec, hasRec := r.applied.get(t.name, key)
	e := &v1alpha1.ClusterPropagationStatus{Cluster: t.name, State: v1alpha1.StatePending,
		ObservedGeneration: lastGeneration(rec, hasRec, prev, 0)}
	if s.replicas != nil {
		n := s.replicas[t.name]
		e.Replicas = &n
	}
	if msg := r.notYet(s, t); msg != "" {
		e.Message = msg
		r.metrics.synced(ResultPending)
		return e, nil, nil
	}
	fail := func(err error) (*v1alpha1.ClusterPropagationStatus, *v1alpha1.ObjectReference, error) {
		r.applied.forget(t.name, key)
		r.metrics.synced(ResultFailed)
		e.State, e.Message = v1alpha1.StateFailed, truncate(err.Error(), maxMessage)
		// Say it once; retries that fail the same way are routine.
		logf := r.log.Debug
		if prev == nil || prev.State != v1alpha1.StateFailed || prev.Message != e.Message {
			logf = r.log.Warn
		}
		logf("apply failed", "propagation", key, "cluster", t.name, "generation", s.p.Generation, "error", err)
		return e, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.MemberTimeout)
	defer cancel()
	c, err := r.renderFor(s.pl, t, e.Replicas)
	if err != nil {
		return fail(err)
	}
	ref := objectRef(c.obj)
	id := objectID{group: c.mapping.Resource.Group, resource: c.mapping.Resource.Resource, namespace: c.obj.GetNamespace(), name: c.obj.GetName()}
	r.watches.ensure(t.name, c.mapping)
	if hasRec && rec.digest == c.digest && rec.id == id && (!s.full || r.vouched(t.name, c.mapping, rec)) {
		// This very object was applied there (the cluster may have been
		// Pending since, while its tunnel was down) and nobody changed it
		// since: the member's watch would have dropped the record.
		r.metrics.synced(ResultUnchanged)
		e.State, e.ObservedGeneration = v1alpha1.StateApplied, s.p.Generation
		r.removeStale(ctx, c.member, t.name, key, id, rec, hasRec)
		return e, ref, nil
	}
	r.applied.begin(t.name, key)
	start := time.Now()
	live, err := c.member.Apply(ctx, c.mapping, c.obj)
	if err != nil {
		r.applied.end(t.name, key)
		r.metrics.applied(ResultFailed, time.Since(start))
		return fail(err)
	}
	r.metrics.applied(ResultApplied, time.Since(start))
	r.metrics.synced(ResultApplied)
	nrec := appliedRecord{digest: c.digest, generation: s.p.Generation, id: id, version: c.mapping.Resource.Version}
	if live != nil {
		nrec.fields, nrec.uid = ownedFields(live.GetManagedFields()), live.GetUID()
	}
	if r.applied.put(t.name, key, nrec) {
		r.recheck(t.name, key, c.mapping.Resource, nrec)
	}
	r.log.Trace("applied", "propagation", key, "cluster", t.name, "generation", s.p.Generation)
	e.State, e.ObservedGeneration, e.Message = v1alpha1.StateApplied, s.p.Generation, ""
	r.removeStale(ctx, c.member, t.name, key, id, rec, hasRec)
	return e, ref, nil
}

// lastGeneration is the generation last applied to a cluster, as far as
// the controller knows: its record's, else its status entry's (prev), else
// unlisted (what a cluster status does not list is taken to have).
func lastGeneration(rec appliedRecord, hasRec bool, prev *v1alpha1.ClusterPropagationStatus, unlisted int64) int64 {
	switch {
	case hasRec:
		return rec.generation
	case prev != nil:
		return prev.ObservedGeneration
	}
	return unlisted
}

// vouched says whether cluster's watch of the copy's kind has listed and
// holds the copy rec records, with the fields rec recorded: the full
// resync then has nothing to write.
func (r *reconciler) vouched(cluster string, mp *meta.RESTMapping, rec appliedRecord) bool {
	if !r.watches.synced(cluster, mp.Resource) {
		return false
	}
	o, ok := r.watches.current(cluster, mp.Resource, rec.id)
	return ok && o.UID == rec.uid && ownedFields(o.ManagedFields) == rec.fields
}

// removeStale deletes, in cluster, the copies of prop other than id: the
// object an earlier generation applied there (rec, when its identity
// differs) and any other the member's watches hold (an earlier template's
// name or kind, applied before the hub started).
func (r *reconciler) removeStale(ctx context.Context, m member, cluster string, prop types.NamespacedName, id objectID, rec appliedRecord, hasRec bool) {
	var stale []copyRef
	for _, c := range r.held(cluster, prop, rec, hasRec) {
		if c.id != id {
			stale = append(stale, c)
		}
	}
	n, err := deleteCopies(ctx, m, stale)
	for range n {
		r.metrics.synced(ResultDeleted)
	}
	if n > 0 {
		r.log.Info("deleted copies the template no longer names", "propagation", prop, "cluster", cluster, "deleted", n)
	}
	if err != nil {
		r.log.Warn("could not delete copies the template no longer names", "propagation", prop, "cluster", cluster, "error", err)
	}
}

// deleteCopies deletes copies, each only if its UID is still the one known
// (it is that copy, not an object made since), and returns how many it
// deleted and what failed.
func deleteCopies(ctx context.Context, m member, copies []copyRef) (int, error) {
	n := 0
	var errs []error
	for _, c := range copies {
		deleted, err := deleteCopyRef(ctx, m, c)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.id, err))
			continue
		}
		if deleted {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// deleteCopyRef deletes the copy c if its UID is still c's (when known)
// and says whether it did; a copy already gone is no error.
func deleteCopyRef(ctx context.Context, m member, c copyRef) (bool, error) {
	mp := &meta.RESTMapping{Resource: c.id.gvr(c.version), Scope: meta.RESTScopeRoot}
	if c.id.namespace != "" {
		mp.Scope = meta.RESTScopeNamespace
	}
	err := m.Delete(ctx, mp, c.id.namespace, c.id.name, c.uid)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		// Gone, or replaced by an object that is not this copy.
		return false, nil
	}
	return err == nil, err
}

// objectRef names a rendered object for status.
func objectRef(obj *unstructured.Unstructured) *v1alpha1.ObjectReference {
	return &v1alpha1.ObjectReference{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// notYet says why cluster t gets nothing in this pass, or "" when it is
// synced now.
func (r *reconciler) notYet(s *pass, t target) string {
	switch {
	case t.cluster == nil:
		return fmt.Sprintf("cluster %s is not registered", t.name)
	case !r.members.Connected(t.name):
		// Nothing is written, updated or deleted while the tunnel is down;
		// the current generation goes out when it returns.
		return fmt.Sprintf("cluster %s is not connected", t.name)
	case s.pl.division != nil && !t.ready():
		// Its share moved to the Ready clusters; its copy keeps running
		// untouched until it is Ready again.
		return fmt.Sprintf("cluster %s is not Ready; its replicas moved to the other clusters", t.name)
	}
	return ""
}

// clusterCopy is the object rendered for one cluster, with what applying
// it there takes.
type clusterCopy struct {
	member  member
	mapping *meta.RESTMapping
	obj     *unstructured.Unstructured
	digest  [sha256.Size]byte
}

// renderFor renders pl's object for cluster t with share replicas (nil:
// left as rendered). The kind's scope comes from t's own discovery, so
// the same template serves clusters that disagree about it.
func (r *reconciler) renderFor(pl *plan, t target, share *int32) (*clusterCopy, error) {
	m, err := r.clients.get(t.name)
	if err != nil {
		return nil, err
	}
	mp, err := m.Mapping(pl.gvk)
	if err != nil {
		return nil, err
	}
	obj, err := pl.render(t, mp.Scope.Name() == meta.RESTScopeNameNamespace, share)
	if err != nil {
		return nil, err
	}
	if gvk := obj.GroupVersionKind(); gvk != pl.gvk { // an override changed it
		if mp, err = m.Mapping(gvk); err != nil {
			return nil, err
		}
	}
	d, err := digest(obj)
	if err != nil {
		return nil, err
	}
	return &clusterCopy{member: m, mapping: mp, obj: obj, digest: d}, nil
}
