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
	// watches are the member watches of copies; nil watches nothing
	// (unit tests drive copyChanged themselves).
	watches *copyWatches
	kinds   *kindSet
	metrics *Metrics
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
		applied: newAppliedCache(opts.Metrics.setManaged),
		kinds:   newKindSet(),
		metrics: opts.Metrics,
		opts:    opts,
		log:     opts.Log.Named(ControllerName),
		now:     time.Now,
		wakeState: wakeState{
			wakePending: map[string]struct{}{},
			wakeProps:   map[types.NamespacedName]struct{}{},
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
	if p.Status.ObservedGeneration > p.Generation {
		// The cache is behind what this controller already applied: never
		// write an older generation. The newer one is on its way.
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	if err := r.addFinalizer(ctx, &p); err != nil {
		return reconcile.Result{}, err
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
	s := newPass(pl, &p, clusters, r.holders(key))
	// Index before looking at connectivity: a tunnel coming up from now on
	// wakes this Propagation.
	r.index.set(key, targetNames(s.targets, s.leaving))
	// Once per resync period every copy is checked against the member's
	// watch, or re-applied where no watch vouches for it; in between only
	// what changed or drifted is written. The resync requeue arrives a
	// period after the last reconcile; 90% leaves room for its jitter.
	s.full = r.applied.resyncDue(key, r.now(), r.opts.Resync*9/10)
	r.useKind(pl.gvk)

	results := r.syncAll(ctx, s)
	st := summarize(&p, kept(results), s.placed)
	st.Objects, st.StaleObjects = r.objects(ctx, &p, results, clusters)
	if err := r.writeStatus(ctx, &p, st); err != nil {
		return reconcile.Result{}, err
	}
	return r.next(results)
}

// addFinalizer holds p until its copies are deleted from the members.
func (r *reconciler) addFinalizer(ctx context.Context, p *v1alpha1.Propagation) error {
	if controllerutil.ContainsFinalizer(p, Finalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(p, Finalizer)
	if err := r.host.Patch(ctx, p, patch); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	return nil
}

// pass is one reconcile of a Propagation that is not being deleted: what
// the syncs of its clusters share.
type pass struct {
	pl *plan
	p  *v1alpha1.Propagation
	// targets are the clusters the placement holds; leaving are those its
	// status still lists that the placement no longer holds.
	targets, leaving []target
	placed           map[string]bool
	// replicas is each target's share; nil without a replica division.
	replicas map[string]int32
	// full re-applies even what is unchanged since it was last applied.
	full bool
}

// newPass places p, compiled as pl, on clusters and divides its replicas.
// The clusters leaving are those outside the placement that may hold a
// copy: listed in status as still to be cleaned, or in holders (the
// controller applied there, or the member's watch holds a copy).
func newPass(pl *plan, p *v1alpha1.Propagation, clusters clusterList, holders []string) *pass {
	s := &pass{pl: pl, p: p, targets: place(pl.placement, clusters)}
	s.replicas = divide(pl.division, pl.weights, s.targets)
	s.placed = make(map[string]bool, len(s.targets))
	for _, t := range s.targets {
		s.placed[t.name] = true
	}
	seen := map[string]bool{}
	leave := func(name string) {
		if !s.placed[name] && !seen[name] {
			seen[name] = true
			s.leaving = append(s.leaving, target{name: name, cluster: clusters.byName(name)})
		}
	}
	for _, e := range p.Status.Clusters {
		leave(e.Cluster)
	}
	for _, c := range holders {
		leave(c)
	}
	return s
}

// synced is what a reconcile did in one cluster: its status entry (nil
// when status keeps none) and the error that made it Failed.
type synced struct {
	entry *v1alpha1.ClusterPropagationStatus
	// ref is the object rendered there; nil when none was.
	ref *v1alpha1.ObjectReference
	err error
}

// syncAll syncs the targets and removes the copies from the clusters
// leaving, ClusterParallelism clusters at a time.
func (r *reconciler) syncAll(ctx context.Context, s *pass) []synced {
	out := make([]synced, len(s.targets)+len(s.leaving))
	r.parallel(len(out), func(i int) {
		if i < len(s.targets) {
			out[i].entry, out[i].ref, out[i].err = r.sync(ctx, s, s.targets[i])
		} else {
			out[i].entry = r.leave(ctx, s.pl, s.p, s.leaving[i-len(s.targets)])
		}
	})
	return out
}

// kept returns the status entries of results, in order.
func kept(results []synced) []v1alpha1.ClusterPropagationStatus {
	var out []v1alpha1.ClusterPropagationStatus
	for _, res := range results {
		if res.entry != nil {
			out = append(out, *res.entry)
		}
	}
	return out
}

// next says when to reconcile again after results, whose status is
// written.
func (r *reconciler) next(results []synced) (reconcile.Result, error) {
	failures := map[string]string{}
	missingKindOnly := true
	for _, res := range results {
		if e := res.entry; e != nil && e.State == v1alpha1.StateFailed {
			failures[e.Cluster] = e.Message
			missingKindOnly = missingKindOnly && meta.IsNoMatchError(res.err)
		}
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
