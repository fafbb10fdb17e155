package propagation

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// maxObjects bounds status.objects and status.staleObjects (the CRD's
// MaxItems).
const maxObjects = 10

// kindSet is the kinds Propagations write (templates, and the kinds of
// objects earlier templates named): what member watches cover.
type kindSet struct {
	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]struct{}
}

func newKindSet() *kindSet { return &kindSet{kinds: map[schema.GroupVersionKind]struct{}{}} }

// add adds gvk and says whether it is new.
func (k *kindSet) add(gvk schema.GroupVersionKind) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.kinds[gvk]; ok {
		return false
	}
	k.kinds[gvk] = struct{}{}
	return true
}

func (k *kindSet) list() []schema.GroupVersionKind {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Collect(maps.Keys(k.kinds))
}

// holders returns the clusters that may hold a copy of prop, as far as
// this process knows: those it applied to, and those whose watches hold
// one.
func (r *reconciler) holders(prop types.NamespacedName) []string {
	set := map[string]struct{}{}
	for _, c := range r.applied.clusters(prop) {
		set[c] = struct{}{}
	}
	for _, c := range r.watches.holders(prop) {
		set[c] = struct{}{}
	}
	return slices.Collect(maps.Keys(set))
}

// useKind makes gvk a kind the member watches cover; a new one is watched
// in every connected cluster from now on.
func (r *reconciler) useKind(gvk schema.GroupVersionKind) {
	if r.watches == nil || !r.kinds.add(gvk) {
		return
	}
	ctx := r.watches.ctx
	go func() {
		clusters, err := r.clusters(ctx)
		if err != nil {
			return
		}
		for _, c := range clusters {
			if ctx.Err() != nil {
				return
			}
			if r.members.Connected(c.Name) {
				r.watchKind(c.Name, gvk)
			}
		}
	}()
}

// watchKinds starts cluster's watches of every kind in use: it has just
// connected, and may hold copies the controller has no record of.
func (r *reconciler) watchKinds(cluster string) {
	for _, gvk := range r.kinds.list() {
		if r.watches.ctx.Err() != nil {
			return
		}
		r.watchKind(cluster, gvk)
	}
}

func (r *reconciler) watchKind(cluster string, gvk schema.GroupVersionKind) {
	m, err := r.clients.get(cluster)
	if err != nil {
		return
	}
	mp, err := m.Mapping(gvk)
	if err != nil {
		return // not served there (yet): nothing of it to watch
	}
	r.watches.ensure(cluster, mp)
}

// objects returns status.objects and status.staleObjects after a pass:
// the objects rendered now, and those earlier generations rendered that
// may still be held by some registered cluster.
func (r *reconciler) objects(ctx context.Context, p *v1alpha1.Propagation, results []synced, clusters clusterList) (objs, stale []v1alpha1.ObjectReference) {
	for _, res := range results {
		if res.ref != nil && !slices.Contains(objs, *res.ref) {
			objs = append(objs, *res.ref)
		}
	}
	if len(objs) == 0 {
		objs = slices.Clone(p.Status.Objects)
	}
	slices.SortFunc(objs, compareRefs)
	objs = objs[:min(len(objs), maxObjects)]
	var cand []v1alpha1.ObjectReference
	for _, o := range append(slices.Clone(p.Status.StaleObjects), p.Status.Objects...) {
		if !slices.Contains(objs, o) && !slices.Contains(cand, o) {
			cand = append(cand, o)
		}
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	for _, o := range cand {
		r.useKind(schema.FromAPIVersionAndKind(o.APIVersion, o.Kind))
		if !r.cleanEverywhere(ctx, key, o, clusters) {
			stale = append(stale, o)
		}
	}
	if len(stale) > maxObjects {
		r.log.Warn("forgetting objects earlier templates named; copies of them may remain in clusters not reached since",
			"propagation", key, "objects", stale[:len(stale)-maxObjects])
		stale = stale[len(stale)-maxObjects:]
	}
	return objs, stale
}

// cleanEverywhere says whether no registered cluster may hold a copy of
// o: each is connected and its watch of o's kind has listed and holds
// none.
func (r *reconciler) cleanEverywhere(ctx context.Context, prop types.NamespacedName, o v1alpha1.ObjectReference, clusters clusterList) bool {
	if r.watches == nil {
		return false
	}
	gvk := schema.FromAPIVersionAndKind(o.APIVersion, o.Kind)
	for _, c := range clusters {
		if ctx.Err() != nil || !r.members.Connected(c.Name) {
			return false
		}
		m, err := r.clients.get(c.Name)
		if err != nil {
			return false
		}
		mp, err := m.Mapping(gvk)
		if err != nil {
			continue // not served there: no copy of it either
		}
		if !r.watches.synced(c.Name, mp.Resource) {
			return false
		}
		id := objectID{group: mp.Resource.Group, resource: mp.Resource.Resource, namespace: o.Namespace, name: o.Name}
		for _, cp := range r.watches.copies(c.Name, prop) {
			if cp.id == id {
				return false
			}
		}
	}
	return true
}

func compareRefs(a, b v1alpha1.ObjectReference) int {
	return strings.Compare(a.APIVersion+"/"+a.Kind+"/"+a.Namespace+"/"+a.Name, b.APIVersion+"/"+b.Kind+"/"+b.Namespace+"/"+b.Name)
}
