package propagation

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// maxMessage bounds a member's error message kept in status.
const maxMessage = 1024

type reconciler struct {
	host    client.Client
	members Members
	clients memberSet
	index   *clusterIndex
	applied *appliedCache
	opts    Options
	log     hclog.Logger
	now     func() time.Time
	wakeState
}

var _ reconcile.Reconciler = (*reconciler)(nil)

func newReconciler(host client.Client, members Members, clients memberSet, opts Options) *reconciler {
	return &reconciler{
		host:    host,
		members: members,
		clients: clients,
		index:   newClusterIndex(),
		applied: newAppliedCache(),
		opts:    opts,
		log:     opts.Log.Named(ControllerName),
		now:     time.Now,
		wakeState: wakeState{
			wakePending: map[string]struct{}{},
			wake:        make(chan struct{}, 1),
		},
	}
}

// SyncError reports the clusters a reconcile failed in; the Propagation is
// retried with backoff.
type SyncError struct {
	// Failures maps cluster name to its error message.
	Failures map[string]string
}

func (e *SyncError) Error() string {
	names := make([]string, 0, len(e.Failures))
	for n := range e.Failures {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + e.Failures[n]
	}
	return "failed in " + strings.Join(parts, "; ")
}

func (r *reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.NamespacedName
	var p v1alpha1.Propagation
	if err := r.host.Get(ctx, key, &p); err != nil {
		if apierrors.IsNotFound(err) {
			r.index.drop(key)
			r.applied.forgetProp(key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if p.DeletionTimestamp != nil {
		return r.finalize(ctx, &p)
	}
	if !controllerutil.ContainsFinalizer(&p, Finalizer) {
		patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&p, Finalizer)
		if err := r.host.Patch(ctx, &p, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}
	clusters, err := r.clusters(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	pl, err := compile(&p)
	if err != nil {
		// Nothing to retry until the spec changes, which enqueues again.
		r.log.Warn("invalid propagation", "propagation", key, "error", err)
		return reconcile.Result{}, r.writeStatus(ctx, &p, invalidStatus(&p, err))
	}
	targets := place(pl.placement, clusters)
	replicas := divide(pl.division, pl.weights, targets)
	placed := make(map[string]bool, len(targets))
	for _, t := range targets {
		placed[t.name] = true
	}
	var leaving []target
	for _, e := range p.Status.Clusters {
		if !placed[e.Cluster] {
			leaving = append(leaving, target{name: e.Cluster, cluster: clusters.byName(e.Cluster)})
		}
	}
	// Index before looking at connectivity: a tunnel coming up from now on
	// wakes this Propagation.
	r.index.set(key, targetNames(targets, leaving))
	// Once per resync period everything is re-applied; in between only
	// what changed. The resync requeue arrives a period after the last
	// reconcile; 90% leaves room for its jitter.
	full := r.applied.resyncDue(key, r.now(), r.opts.Resync*9/10)

	entries := make([]*v1alpha1.ClusterPropagationStatus, len(targets)+len(leaving))
	errs := make([]error, len(entries))
	r.parallel(len(entries), func(i int) {
		if i < len(targets) {
			entries[i], errs[i] = r.sync(ctx, pl, &p, targets[i], replicas, full)
		} else {
			entries[i] = r.leave(ctx, pl, &p, leaving[i-len(targets)])
		}
	})
	var kept []v1alpha1.ClusterPropagationStatus
	failures := map[string]string{}
	missingKindOnly := true
	for i, e := range entries {
		if e == nil {
			continue
		}
		kept = append(kept, *e)
		if e.State == v1alpha1.StateFailed {
			failures[e.Cluster] = e.Message
			missingKindOnly = missingKindOnly && meta.IsNoMatchError(errs[i])
		}
	}
	if err := r.writeStatus(ctx, &p, summarize(&p, kept, placed)); err != nil {
		return reconcile.Result{}, err
	}
	switch {
	case len(failures) == 0:
		return r.resync(), nil
	case missingKindOnly:
		// Waiting for a kind (a CRD propagated alongside) is not an error
		// that deserves a growing backoff: look again shortly.
		return reconcile.Result{RequeueAfter: r.opts.MissingKindRetry, Priority: &lowPriority}, nil
	default:
		return reconcile.Result{}, &SyncError{Failures: failures}
	}
}

// sync brings cluster t up to date and returns its status entry, and the
// error that made it Failed. Unless full, an object applied before and
// unchanged since is not written again.
func (r *reconciler) sync(ctx context.Context, pl *plan, p *v1alpha1.Propagation, t target, replicas map[string]int32, full bool) (*v1alpha1.ClusterPropagationStatus, error) {
	prev := entryFor(&p.Status, t.name)
	e := &v1alpha1.ClusterPropagationStatus{Cluster: t.name, State: v1alpha1.StatePending}
	if prev != nil {
		e.ObservedGeneration = prev.ObservedGeneration
	}
	var share *int32
	if replicas != nil {
		n := replicas[t.name]
		share = &n
		e.Replicas = share
	}
	switch {
	case t.cluster == nil:
		e.Message = fmt.Sprintf("cluster %s is not registered", t.name)
		return e, nil
	case !r.members.Connected(t.name):
		// Nothing is written, updated or deleted while the tunnel is down;
		// the current generation goes out when it returns.
		e.Message = fmt.Sprintf("cluster %s is not connected", t.name)
		return e, nil
	case pl.division != nil && !t.ready():
		// Its share moved to the Ready clusters; its copy keeps running
		// untouched until it is Ready again.
		e.Message = fmt.Sprintf("cluster %s is not Ready; its replicas moved to the other clusters", t.name)
		return e, nil
	case prev != nil && prev.ObservedGeneration > p.Generation:
		// The cache is behind what we already applied: never write an
		// older generation. The newer one is on its way.
		return prev.DeepCopy(), nil
	}
	fail := func(err error) (*v1alpha1.ClusterPropagationStatus, error) {
		r.applied.forget(t.name, pl.key)
		e.State, e.Message = v1alpha1.StateFailed, truncate(err.Error(), maxMessage)
		// Say it once; retries that fail the same way are routine.
		logf := r.log.Debug
		if prev == nil || prev.State != v1alpha1.StateFailed || prev.Message != e.Message {
			logf = r.log.Warn
		}
		logf("apply failed", "propagation", pl.key, "cluster", t.name, "generation", p.Generation, "error", err)
		return e, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.MemberTimeout)
	defer cancel()
	m, err := r.clients.get(t.name)
	if err != nil {
		return fail(err)
	}
	mp, err := m.Mapping(pl.gvk)
	if err != nil {
		return fail(err)
	}
	obj, err := pl.render(t, mp.Scope.Name() == meta.RESTScopeNameNamespace, share)
	if err != nil {
		return fail(err)
	}
	if gvk := obj.GroupVersionKind(); gvk != pl.gvk { // an override changed it
		if mp, err = m.Mapping(gvk); err != nil {
			return fail(err)
		}
	}
	d, err := digest(obj)
	if err != nil {
		return fail(err)
	}
	if rec, ok := r.applied.get(t.name, pl.key); ok && !full && rec.digest == d &&
		prev != nil && prev.State == v1alpha1.StateApplied && prev.ObservedGeneration == p.Generation {
		// Applied already and unchanged: this reconcile came from an event
		// that does not concern this cluster. The resync re-applies.
		e.State, e.ObservedGeneration = v1alpha1.StateApplied, p.Generation
		return e, nil
	}
	if err := m.Apply(ctx, mp, obj); err != nil {
		return fail(err)
	}
	r.applied.put(t.name, pl.key, appliedRecord{digest: d})
	r.log.Trace("applied", "propagation", pl.key, "cluster", t.name, "generation", p.Generation)
	e.State, e.ObservedGeneration = v1alpha1.StateApplied, p.Generation
	return e, nil
}

// leave removes the copy from cluster t, which left the placement. It
// returns nil when nothing is left to do there, or an entry saying what
// waits.
func (r *reconciler) leave(ctx context.Context, pl *plan, p *v1alpha1.Propagation, t target) *v1alpha1.ClusterPropagationStatus {
	prev := entryFor(&p.Status, t.name)
	e, done := r.remove(ctx, pl, t, prev)
	if done {
		return nil
	}
	return e
}

// remove deletes the copy in cluster t. done means nothing is left there
// (deleted, never there, or the Cluster is gone); otherwise the entry says
// what waits.
func (r *reconciler) remove(ctx context.Context, pl *plan, t target, prev *v1alpha1.ClusterPropagationStatus) (*v1alpha1.ClusterPropagationStatus, bool) {
	if t.cluster == nil {
		// The Cluster was deleted: its credentials are revoked and it is
		// no longer reachable. Nothing more to do there.
		return nil, true
	}
	e := &v1alpha1.ClusterPropagationStatus{Cluster: t.name, State: v1alpha1.StatePending}
	if prev != nil {
		e.ObservedGeneration = prev.ObservedGeneration
	}
	if !r.members.Connected(t.name) {
		if !mayHoldCopy(prev) {
			return nil, true
		}
		e.Message = fmt.Sprintf("cluster %s is not connected; its copy is deleted when it returns", t.name)
		return e, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.MemberTimeout)
	defer cancel()
	if err := r.deleteCopy(ctx, pl, t); err != nil {
		r.log.Warn("delete failed", "propagation", pl.key, "cluster", t.name, "error", err)
		e.State, e.Message = v1alpha1.StateFailed, truncate("delete: "+err.Error(), maxMessage)
		return e, false
	}
	r.applied.forget(t.name, pl.key)
	r.log.Debug("deleted copy", "propagation", pl.key, "cluster", t.name)
	return nil, true
}

// deleteCopy deletes the object pl renders for t, if it is there and is
// ours.
func (r *reconciler) deleteCopy(ctx context.Context, pl *plan, t target) error {
	m, err := r.clients.get(t.name)
	if err != nil {
		return err
	}
	mp, err := m.Mapping(pl.gvk)
	if meta.IsNoMatchError(err) {
		return nil // the kind is gone, and its objects with it
	}
	if err != nil {
		return err
	}
	namespaced := mp.Scope.Name() == meta.RESTScopeNameNamespace
	obj, err := pl.render(t, namespaced, nil)
	if err != nil {
		// The overrides do not apply (any more): the copy, if any, has the
		// template's identity.
		obj, err = pl.withoutOverrides().render(t, namespaced, nil)
		if err != nil {
			return err
		}
	}
	if gvk := obj.GroupVersionKind(); gvk != pl.gvk {
		if mp, err = m.Mapping(gvk); meta.IsNoMatchError(err) {
			return nil
		} else if err != nil {
			return err
		}
	}
	cur, err := m.Get(ctx, mp, obj.GetNamespace(), obj.GetName())
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !owned(cur, pl.key) {
		r.log.Info("not deleting an object this propagation does not own", "propagation", pl.key, "cluster", t.name,
			"kind", cur.GetKind(), "namespace", cur.GetNamespace(), "name", cur.GetName())
		return nil
	}
	if err := m.Delete(ctx, mp, cur.GetNamespace(), cur.GetName(), cur.GetUID()); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
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
	for _, e := range p.Status.Clusters {
		if !seen[e.Cluster] {
			todo = append(todo, target{name: e.Cluster, cluster: clusters.byName(e.Cluster)})
		}
	}
	r.index.set(key, targetNames(todo, nil))
	entries := make([]*v1alpha1.ClusterPropagationStatus, len(todo))
	r.parallel(len(todo), func(i int) {
		entries[i], _ = r.remove(ctx, pl, todo[i], entryFor(&p.Status, todo[i].name))
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

// writeStatus patches p's status to st unless it is unchanged.
func (r *reconciler) writeStatus(ctx context.Context, p *v1alpha1.Propagation, st v1alpha1.PropagationStatus) error {
	if statusEqual(p.Status, st) {
		return nil
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Status = st
	if err := r.host.Status().Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// clusterList is the registered clusters, read from the manager's cache.
// The items are shared with the cache: read only.
type clusterList []v1alpha1.Cluster

func (l clusterList) byName(name string) *v1alpha1.Cluster {
	for i := range l {
		if l[i].Name == name {
			return &l[i]
		}
	}
	return nil
}

func (r *reconciler) clusters(ctx context.Context) (clusterList, error) {
	var list v1alpha1.ClusterList
	if err := r.host.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	return list.Items, nil
}

// parallel runs fn(0..n-1) with at most ClusterParallelism at once.
func (r *reconciler) parallel(n int, fn func(i int)) {
	if n == 1 {
		fn(0)
		return
	}
	sem := make(chan struct{}, max(r.opts.ClusterParallelism, 1))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// lowPriority is the queue priority of periodic work (resyncs, polls for
// a missing kind): the same as the initial list's, below events (0), so
// changes go first and periodic work is served in order, never starving
// what the initial list queued (kubernetes-sigs/controller-runtime#3496).
var lowPriority = handler.LowPriority

// resync requeues for the next drift resync, spread over 10% of the period
// so Propagations created together do not resync in lockstep.
func (r *reconciler) resync() reconcile.Result {
	return reconcile.Result{
		RequeueAfter: r.opts.Resync + time.Duration(rand.Int64N(int64(r.opts.Resync)/10+1)),
		Priority:     &lowPriority,
	}
}

func targetNames(a, b []target) []string {
	out := make([]string, 0, len(a)+len(b))
	for _, t := range a {
		out = append(out, t.name)
	}
	for _, t := range b {
		out = append(out, t.name)
	}
	return out
}
