package propagation

import (
	"context"
	"crypto/sha256"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// sync brings cluster t up to date and returns its status entry, and the
// error that made it Failed. Unless s.full, an object applied before and
// unchanged since is not written again.
func (r *reconciler) sync(ctx context.Context, s *pass, t target) (*v1alpha1.ClusterPropagationStatus, error) {
	prev := entryFor(&s.p.Status, t.name)
	e := &v1alpha1.ClusterPropagationStatus{Cluster: t.name, State: v1alpha1.StatePending}
	if prev != nil {
		e.ObservedGeneration = prev.ObservedGeneration
	}
	if s.replicas != nil {
		n := s.replicas[t.name]
		e.Replicas = &n
	}
	if msg := r.notYet(s, t); msg != "" {
		e.Message = msg
		return e, nil
	}
	if prev != nil && prev.ObservedGeneration > s.p.Generation {
		// The cache is behind what we already applied: never write an
		// older generation. The newer one is on its way.
		return prev.DeepCopy(), nil
	}
	fail := func(err error) (*v1alpha1.ClusterPropagationStatus, error) {
		r.applied.forget(t.name, s.pl.key)
		e.State, e.Message = v1alpha1.StateFailed, truncate(err.Error(), maxMessage)
		// Say it once; retries that fail the same way are routine.
		logf := r.log.Debug
		if prev == nil || prev.State != v1alpha1.StateFailed || prev.Message != e.Message {
			logf = r.log.Warn
		}
		logf("apply failed", "propagation", s.pl.key, "cluster", t.name, "generation", s.p.Generation, "error", err)
		return e, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.MemberTimeout)
	defer cancel()
	c, err := r.renderFor(s.pl, t, e.Replicas)
	if err != nil {
		return fail(err)
	}
	if rec, ok := r.applied.get(t.name, s.pl.key); ok && !s.full && rec.digest == c.digest &&
		prev != nil && prev.ObservedGeneration == s.p.Generation {
		// This very object was applied there (the cluster may have been
		// Pending since, while its tunnel was down): this reconcile came
		// from an event that changed nothing for this cluster. The resync
		// re-applies.
		e.State, e.ObservedGeneration = v1alpha1.StateApplied, s.p.Generation
		return e, nil
	}
	if err := c.member.Apply(ctx, c.mapping, c.obj); err != nil {
		return fail(err)
	}
	r.applied.put(t.name, s.pl.key, appliedRecord{digest: c.digest})
	r.log.Trace("applied", "propagation", s.pl.key, "cluster", t.name, "generation", s.p.Generation)
	e.State, e.ObservedGeneration = v1alpha1.StateApplied, s.p.Generation
	return e, nil
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
