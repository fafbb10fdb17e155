package propagation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// ControllerName names the controller in the manager (logs, metrics).
const ControllerName = "propagation"

// Options tune the controller. Zero fields take the [DefaultOptions]
// value.
type Options struct {
	// Log receives the controller's logs; nil discards them.
	Log hclog.Logger
	// Workers is how many Propagations are reconciled at once.
	Workers int
	// ClusterParallelism is how many clusters one reconcile writes to at
	// once.
	ClusterParallelism int
	// Resync is how often every Propagation is checked in full in every
	// connected cluster: a safety net, since drift is seen by watching the
	// copies in members. A copy the member's watch shows as applied is not
	// written again; one it cannot vouch for (no watch: the member
	// forbids it) is re-applied. Each reconcile requeues after Resync plus
	// up to 10% jitter.
	Resync time.Duration
	// RetryBase and RetryMax bound the exponential backoff of a
	// Propagation that failed in some cluster.
	RetryBase, RetryMax time.Duration
	// MissingKindRetry is how soon a Propagation whose kind a member does
	// not serve (yet) is tried again, instead of the growing backoff:
	// typically its CRD is being propagated alongside.
	MissingKindRetry time.Duration
	// MemberTimeout bounds each call to a member.
	MemberTimeout time.Duration
	// RediscoveryInterval is the least time between two discoveries of one
	// member triggered by a kind it did not know.
	RediscoveryInterval time.Duration
	// SkipNameValidation lets several managers in one process register the
	// controller (tests).
	SkipNameValidation bool
	// Metrics receives the controller's series; nil records none.
	Metrics *Metrics
	// MaxWatchedCopies bounds how many labelled objects of one kind the
	// controller watches (and keeps the metadata of) in one member. A
	// member holding more, hostile or beyond what the hub is sized for,
	// is not watched until its tunnel comes back: its copies are
	// re-applied at each resync instead.
	MaxWatchedCopies int
}

// DefaultOptions returns the options for a hub in production.
func DefaultOptions() Options {
	return Options{
		Workers:             8,
		ClusterParallelism:  8,
		Resync:              30 * time.Minute,
		RetryBase:           250 * time.Millisecond,
		RetryMax:            2 * time.Minute,
		MissingKindRetry:    2 * time.Second,
		MemberTimeout:       30 * time.Second,
		RediscoveryInterval: time.Second,
		MaxWatchedCopies:    100_000,
	}
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	if o.Workers == 0 {
		o.Workers = d.Workers
	}
	if o.ClusterParallelism == 0 {
		o.ClusterParallelism = d.ClusterParallelism
	}
	if o.Resync == 0 {
		o.Resync = d.Resync
	}
	if o.RetryBase == 0 {
		o.RetryBase = d.RetryBase
	}
	if o.RetryMax == 0 {
		o.RetryMax = d.RetryMax
	}
	if o.MissingKindRetry == 0 {
		o.MissingKindRetry = d.MissingKindRetry
	}
	if o.MemberTimeout == 0 {
		o.MemberTimeout = d.MemberTimeout
	}
	if o.RediscoveryInterval == 0 {
		o.RediscoveryInterval = d.RediscoveryInterval
	}
	if o.MaxWatchedCopies == 0 {
		o.MaxWatchedCopies = d.MaxWatchedCopies
	}
	return o
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.Workers < 0 {
		errs = append(errs, fmt.Errorf("workers %d < 0", o.Workers))
	}
	if o.MaxWatchedCopies < 0 {
		errs = append(errs, fmt.Errorf("max watched copies %d < 0", o.MaxWatchedCopies))
	}
	if o.ClusterParallelism < 0 {
		errs = append(errs, fmt.Errorf("cluster parallelism %d < 0", o.ClusterParallelism))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"resync", o.Resync}, {"retry base", o.RetryBase}, {"retry max", o.RetryMax},
		{"missing kind retry", o.MissingKindRetry}, {"member timeout", o.MemberTimeout}, {"rediscovery interval", o.RediscoveryInterval}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v < 0", d.name, d.v))
		}
	}
	if o.RetryBase > 0 && o.RetryMax > 0 && o.RetryMax < o.RetryBase {
		errs = append(errs, fmt.Errorf("retry max %v < retry base %v", o.RetryMax, o.RetryBase))
	}
	return errors.Join(errs...)
}

// Setup registers the Propagation controller on mgr, whose cache must
// cover Propagations and Clusters of the hub's host cluster and whose
// scheme must hold backhaul.io/v1alpha1. In the host the controller needs
// get/list/watch/patch on propagations, patch on propagations/status,
// update on propagations/finalizers and get/list/watch on clusters.
func Setup(mgr ctrl.Manager, members Members, opts Options) error {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("propagation: %w", err)
	}
	if _, _, err := mgr.GetScheme().ObjectKinds(&v1alpha1.Propagation{}); err != nil {
		return fmt.Errorf("propagation: add backhaul.io/v1alpha1 to the manager's scheme: %w", err)
	}
	r := newReconciler(mgr.GetClient(), members, newMemberClients(members, opts.RediscoveryInterval), opts)
	members.Watch(r.memberChanged)
	copts := controller.Options{
		MaxConcurrentReconciles: opts.Workers,
		RateLimiter:             workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](opts.RetryBase, opts.RetryMax),
		// controller-runtime's own priority queue, with its series on the
		// hub's registry instead of controller-runtime's global one.
		NewQueue: func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			return priorityqueue.New(name, func(o *priorityqueue.Opts[reconcile.Request]) {
				o.RateLimiter = rl
				o.MetricProvider = opts.Metrics.queueProvider()
				o.Log = mgr.GetLogger().WithValues("controller", name)
			})
		},
	}
	if opts.SkipNameValidation {
		copts.SkipNameValidation = &opts.SkipNameValidation
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&v1alpha1.Propagation{}, builder.WithPredicates(propagationChanged)).
		Watches(&v1alpha1.Cluster{}, r.clusterHandler()).
		WatchesRawSource(source.Func(r.startWakeups)).
		WithOptions(copts).
		Complete(r)
}

// propagationChanged passes what the controller acts on: spec (generation),
// deletion, and our finalizer going missing; not its own status writes.
var propagationChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			!equality.Semantic.DeepEqual(o.GetDeletionTimestamp(), n.GetDeletionTimestamp()) ||
			!slices.Contains(n.GetFinalizers(), Finalizer)
	},
}

// clusterHandler enqueues the Propagations a Cluster event concerns: a new
// or deleted Cluster, changed labels (placement, overrides, weights), or
// a Ready flip (replica division). Heartbeats and other status writes
// enqueue nothing.
func (r *reconciler) clusterHandler() handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueFor(ctx, q, e.Object.(*v1alpha1.Cluster), false)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueFor(ctx, q, e.Object.(*v1alpha1.Cluster), false)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*v1alpha1.Cluster), e.ObjectNew.(*v1alpha1.Cluster)
			switch {
			case !maps.Equal(o.Labels, n.Labels) || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil):
				r.enqueueFor(ctx, q, o, false)
				r.enqueueFor(ctx, q, n, false)
			case clusterReady(o) != clusterReady(n):
				r.enqueueFor(ctx, q, n, true)
			}
		},
	}
}

// enqueueFor adds the Propagations whose placement selects c or that have
// something recorded or pending in c; with divisionOnly, only those that
// divide replicas.
func (r *reconciler) enqueueFor(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], c *v1alpha1.Cluster, divisionOnly bool) {
	var list v1alpha1.PropagationList
	if err := r.host.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		r.log.Error("list propagations for a cluster event", "cluster", c.Name, "error", err)
		return
	}
	indexed := map[types.NamespacedName]bool{}
	for _, k := range r.index.lookup(c.Name) {
		indexed[k] = true
	}
	for i := range list.Items {
		p := &list.Items[i]
		if divisionOnly && p.Spec.ReplicaDivision == nil {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		if !indexed[key] {
			sel, err := compileSelection(p.Spec.Placement.ClusterSelection)
			if err != nil || !sel.matches(c.Name, c.Labels) {
				continue
			}
		}
		q.Add(reconcile.Request{NamespacedName: key})
	}
}

// memberChanged is the Members.Watch callback: it must not block. The
// cluster's client is dropped (the next one rediscovers what the member
// serves), and the Propagations concerning it are woken by the wakeup
// loop. What was applied there is remembered: a returning cluster gets
// only what changed while it was away (a flapping tunnel must not cost a
// full re-push of the fleet's objects); the resync re-applies the rest.
func (r *reconciler) memberChanged(cluster string) {
	r.clients.forget(cluster)
	r.hand(func() { r.wakePending[cluster] = struct{}{} })
}

// hand records, with add, work for the wakeup loop and signals it,
// without blocking.
func (r *reconciler) hand(add func()) {
	r.wakeMu.Lock()
	add()
	r.wakeMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// startWakeups is the source the controller starts: it enqueues, for each
// cluster whose connection changed, the Propagations indexed to it, and
// restarts the cluster's watches of copies; and it enqueues the
// Propagations the member watches report (drift, leftovers). The watches
// live as long as ctx: the controller's run.
func (r *reconciler) startWakeups(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	r.watches = newCopyWatches(ctx, r.log.Named("watch"), r.members.Config, r.metrics, r.opts.MaxWatchedCopies, r.copyChanged)
	go func() {
		for {
			select {
			case <-ctx.Done():
				r.watches.stopAll()
				return
			case <-r.wake:
			}
			r.wakeMu.Lock()
			pending, props := r.wakePending, r.wakeProps
			r.wakePending, r.wakeProps = map[string]struct{}{}, map[types.NamespacedName]struct{}{}
			r.wakeMu.Unlock()
			for c := range pending {
				connected := r.members.Connected(c)
				keys := r.index.lookup(c)
				r.log.Debug("cluster connection changed", "cluster", c, "connected", connected, "propagations", len(keys))
				// The watches went down with the tunnel: start them
				// afresh. Their first list shows what changed there
				// while the cluster was away.
				r.watches.reset(c)
				if connected {
					go r.watchKinds(c)
				}
				for _, k := range keys {
					q.Add(reconcile.Request{NamespacedName: k})
				}
			}
			for k := range props {
				q.Add(reconcile.Request{NamespacedName: k})
			}
		}
	}()
	return nil
}

// wakeState is the hand-off between Members.Watch callbacks and the wakeup
// loop.
type wakeState struct {
	wakeMu      sync.Mutex
	wakePending map[string]struct{}
	// wakeProps are Propagations member watches queue (drift, leftovers).
	wakeProps map[types.NamespacedName]struct{}
	wake      chan struct{}
}
