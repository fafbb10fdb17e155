package propagation

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// indexPropagation indexes a member's copies by the Propagation that owns
// them ("<namespace>/<name>" of AnnotationPropagation).
const indexPropagation = "propagation"

// copyEvent is what a member watch reports: a copy of a Propagation
// added, changed or deleted in cluster.
type copyEvent struct {
	cluster string
	prop    types.NamespacedName
	id      objectID
	obj     *metav1.PartialObjectMetadata
	deleted bool
}

// copyRef is a copy a member watch holds.
type copyRef struct {
	id      objectID
	version string
	uid     types.UID
	// fields is the digest of the fields FieldManager owns in it.
	fields [32]byte
}

// copyWatches watches, in every connected member, the copies of the kinds
// Propagations write (only objects that carry LabelPropagation, and only
// their metadata), so that drift is seen when it happens instead of by
// re-applying everything periodically, and so that the copies a member
// holds are known without asking it: those left behind by a renamed
// template or a cluster that left the placement.
//
// The hub keeps the metadata of every labelled object of a watched kind
// in a member, and a member chooses how many there are: one that holds
// more than maxCopies of one kind (hostile, or beyond what the hub is
// sized for) is not watched until its tunnel comes back, and its copies
// are re-applied at each resync instead ([Options.MaxWatchedCopies]).
type copyWatches struct {
	ctx       context.Context
	log       hclog.Logger
	config    func(cluster string) *rest.Config
	onEvent   func(copyEvent)
	metrics   *Metrics
	maxCopies int

	mu        sync.Mutex
	byCluster map[string]*memberWatch
	// refused are members that held too many copies.
	refused map[string]bool
	// holding counts, per Propagation, the copies each watched cluster
	// holds, so that the clusters holding one are known without asking
	// every watch.
	holding map[types.NamespacedName]map[string]int
}

// errTooManyCopies ends a member watch's list that exceeds maxCopies.
var errTooManyCopies = errors.New("the member holds more labelled objects of this kind than the hub watches")

// memberWatch is one member's watches, one informer per resource.
type memberWatch struct {
	cancel    context.CancelFunc
	ctx       context.Context
	client    metadata.Interface
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
}

func newCopyWatches(ctx context.Context, log hclog.Logger, config func(string) *rest.Config, metrics *Metrics, maxCopies int, onEvent func(copyEvent)) *copyWatches {
	return &copyWatches{ctx: ctx, log: log, config: config, onEvent: onEvent, metrics: metrics, maxCopies: maxCopies,
		byCluster: map[string]*memberWatch{}, refused: map[string]bool{}, holding: map[types.NamespacedName]map[string]int{}}
}

// ensure watches resource mp in cluster, starting the member's watches if
// needed. It does not wait for the watch to list.
func (w *copyWatches) ensure(cluster string, mp *meta.RESTMapping) {
	if w == nil {
		return
	}
	gvr := mp.Resource
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refused[cluster] {
		return
	}
	mw := w.byCluster[cluster]
	if mw == nil {
		cfg := w.config(cluster)
		if cfg == nil {
			return
		}
		c, err := metadata.NewForConfig(memberConfig(cfg))
		if err != nil {
			w.log.Warn("cannot watch copies", "cluster", cluster, "error", err)
			return
		}
		ctx, cancel := context.WithCancel(w.ctx)
		mw = &memberWatch{ctx: ctx, cancel: cancel, client: c, informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{}}
		w.byCluster[cluster] = mw
	}
	if mw.informers[gvr] != nil {
		return
	}
	log := w.log.With("cluster", cluster, "resource", gvr.String())
	res := mw.client.Resource(gvr)
	var listed int // items in the pages of the list under way
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = LabelPropagation
			list, err := res.List(ctx, o)
			if err != nil {
				return nil, err
			}
			if o.Continue == "" {
				listed = 0
			}
			// Pages come one at a time: stop before holding more than the
			// bound in memory.
			if listed += len(list.Items); listed > w.maxCopies {
				go w.overflow(cluster, gvr, listed)
				return nil, errTooManyCopies
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = LabelPropagation
			return res.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{indexPropagation: indexByPropagation})
	// Keep only what drift detection reads: the controller's own
	// managedFields entry, not every other manager's.
	_ = inf.SetTransform(trimCopy)
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if errors.Is(err, errTooManyCopies) {
			return
		}
		if apierrors.IsForbidden(err) {
			log.Warn("the member does not let the hub watch this kind; drift there is reverted only by the periodic resync", "error", err)
			return
		}
		log.Debug("watch of copies failed; retrying", "error", err)
	})
	handle := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj, deleted = d.Obj, true
		}
		o, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return
		}
		key, ok := propagationKey(o)
		if !ok {
			return
		}
		w.onEvent(copyEvent{cluster: cluster, prop: key, id: idOf(gvr, o), obj: o, deleted: deleted})
	}
	var held atomic.Int64 // objects in the store, as the handlers saw them
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n := held.Add(1); n > int64(w.maxCopies) {
				go w.overflow(cluster, gvr, int(n))
				return
			}
			w.count(mw, cluster, nil, obj)
			handle(obj, false)
		},
		UpdateFunc: func(old, obj any) { w.count(mw, cluster, old, obj); handle(obj, false) },
		DeleteFunc: func(obj any) { held.Add(-1); w.count(mw, cluster, obj, nil); handle(obj, true) },
	})
	mw.informers[gvr] = inf
	w.metrics.addWatches(1)
	go inf.RunWithContext(mw.ctx)
}

// count moves one copy in cluster's holding counts from the Propagation
// old names to the one obj names (either nil), as long as mw is still
// cluster's watch.
func (w *copyWatches) count(mw *memberWatch, cluster string, old, obj any) {
	from, fromOK := keyOf(old)
	to, toOK := keyOf(obj)
	if fromOK && toOK && from == to {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byCluster[cluster] != mw {
		return // stopped: its counts are gone
	}
	if fromOK {
		if m := w.holding[from]; m != nil {
			if m[cluster]--; m[cluster] <= 0 {
				delete(m, cluster)
			}
			if len(m) == 0 {
				delete(w.holding, from)
			}
		}
	}
	if toOK {
		m := w.holding[to]
		if m == nil {
			m = map[string]int{}
			w.holding[to] = m
		}
		m[cluster]++
	}
}

// keyOf is the Propagation a watched object (or its deleted final state)
// names.
func keyOf(obj any) (types.NamespacedName, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return types.NamespacedName{}, false
	}
	return propagationKey(o)
}

// holders returns the watched clusters that hold a copy of prop.
func (w *copyWatches) holders(prop types.NamespacedName) []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Collect(maps.Keys(w.holding[prop]))
}

// overflow stops watching cluster, which holds n labelled objects of gvr,
// more than the hub watches, until its tunnel comes back ([reset]).
func (w *copyWatches) overflow(cluster string, gvr schema.GroupVersionResource, n int) {
	w.mu.Lock()
	first := !w.refused[cluster]
	w.refused[cluster] = true
	w.mu.Unlock()
	w.stop(cluster)
	if first {
		w.metrics.watchRefused()
		w.log.Warn("not watching the copies in this member: it holds more labelled objects of a kind than --propagation-max-watched-copies; "+
			"drift there is reverted only by the periodic resync, which re-applies its copies", "cluster", cluster, "resource", gvr.String(), "objects", n, "max", w.maxCopies)
	}
}

// reset stops cluster's watches and lets them start again: its tunnel
// changed.
func (w *copyWatches) reset(cluster string) {
	if w == nil {
		return
	}
	w.stop(cluster)
	w.mu.Lock()
	delete(w.refused, cluster)
	w.mu.Unlock()
}

// stop ends cluster's watches (its tunnel went down or came back: they
// start again as the controller next writes there).
func (w *copyWatches) stop(cluster string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if mw := w.byCluster[cluster]; mw != nil {
		mw.cancel()
		w.metrics.addWatches(-len(mw.informers))
		delete(w.byCluster, cluster)
		for prop, m := range w.holding {
			delete(m, cluster)
			if len(m) == 0 {
				delete(w.holding, prop)
			}
		}
	}
}

// stopAll ends every watch (the controller's run is over).
func (w *copyWatches) stopAll() {
	for _, c := range w.watching() {
		w.stop(c)
	}
}

// synced says whether cluster's watch of resource gvr has listed, so that
// its store is what the member holds.
func (w *copyWatches) synced(cluster string, gvr schema.GroupVersionResource) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	mw := w.byCluster[cluster]
	return mw != nil && mw.informers[gvr] != nil && mw.informers[gvr].HasSynced()
}

// watching returns the clusters with watches.
func (w *copyWatches) watching() []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Collect(maps.Keys(w.byCluster))
}

// copies returns the copies of prop the watches of cluster hold.
func (w *copyWatches) copies(cluster string, prop types.NamespacedName) []copyRef {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	mw := w.byCluster[cluster]
	var infs []cache.SharedIndexInformer
	var gvrs []schema.GroupVersionResource
	if mw != nil {
		for gvr, inf := range mw.informers {
			infs, gvrs = append(infs, inf), append(gvrs, gvr)
		}
	}
	w.mu.Unlock()
	var out []copyRef
	for i, inf := range infs {
		objs, _ := inf.GetIndexer().ByIndex(indexPropagation, prop.String())
		for _, obj := range objs {
			if o, ok := obj.(*metav1.PartialObjectMetadata); ok {
				out = append(out, copyRef{id: idOf(gvrs[i], o), version: gvrs[i].Version, uid: o.UID, fields: ownedFields(o.ManagedFields)})
			}
		}
	}
	return out
}

// current returns the copy id as cluster's watch last saw it.
func (w *copyWatches) current(cluster string, gvr schema.GroupVersionResource, id objectID) (*metav1.PartialObjectMetadata, bool) {
	if w == nil {
		return nil, false
	}
	w.mu.Lock()
	var inf cache.SharedIndexInformer
	if mw := w.byCluster[cluster]; mw != nil {
		inf = mw.informers[gvr]
	}
	w.mu.Unlock()
	if inf == nil {
		return nil, false
	}
	key := id.name
	if id.namespace != "" {
		key = id.namespace + "/" + id.name
	}
	obj, ok, _ := inf.GetStore().GetByKey(key)
	if !ok {
		return nil, false
	}
	o, ok := obj.(*metav1.PartialObjectMetadata)
	return o, ok
}

func idOf(gvr schema.GroupVersionResource, o metav1.Object) objectID {
	return objectID{group: gvr.Group, resource: gvr.Resource, namespace: o.GetNamespace(), name: o.GetName()}
}

// propagationKey returns the Propagation that owns a copy, from
// AnnotationPropagation.
func propagationKey(o metav1.Object) (types.NamespacedName, bool) {
	ns, name, ok := strings.Cut(o.GetAnnotations()[AnnotationPropagation], "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}

func indexByPropagation(obj any) ([]string, error) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	if key, ok := propagationKey(o); ok {
		return []string{key.String()}, nil
	}
	return nil, nil
}

// trimCopy drops from a watched copy what the controller never reads:
// other managers' managedFields entries.
func trimCopy(obj any) (any, error) {
	o, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	var own []metav1.ManagedFieldsEntry
	for _, e := range o.ManagedFields {
		if isOwnEntry(e) {
			own = append(own, e)
		}
	}
	o.ManagedFields = own
	return o, nil
}
