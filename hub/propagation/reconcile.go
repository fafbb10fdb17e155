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
		prev != nil && prev.ObservedGeneration == p.Generation {
		// This very object was applied there (the cluster may have been
		// Pending since, while its tunnel was down): this reconcile came
		// from an event that changed nothing for this cluster. The resync
		// re-applies.
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
