package propagation

import (
	"crypto/sha256"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// clusterIndex maps each cluster to the Propagations that place on it or
// have something pending there, so a tunnel coming back wakes exactly
// those.
type clusterIndex struct {
	mu        sync.Mutex
	byCluster map[string]map[types.NamespacedName]struct{}
	byProp    map[types.NamespacedName][]string
}

func newClusterIndex() *clusterIndex {
	return &clusterIndex{
		byCluster: map[string]map[types.NamespacedName]struct{}{},
		byProp:    map[types.NamespacedName][]string{},
	}
}

// set records the clusters prop concerns, replacing what was recorded.
func (x *clusterIndex) set(prop types.NamespacedName, clusters []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropLocked(prop)
	for _, c := range clusters {
		m := x.byCluster[c]
		if m == nil {
			m = map[types.NamespacedName]struct{}{}
			x.byCluster[c] = m
		}
		m[prop] = struct{}{}
	}
	x.byProp[prop] = clusters
}

func (x *clusterIndex) drop(prop types.NamespacedName) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropLocked(prop)
}

func (x *clusterIndex) dropLocked(prop types.NamespacedName) {
	for _, c := range x.byProp[prop] {
		if m := x.byCluster[c]; m != nil {
			delete(m, prop)
			if len(m) == 0 {
				delete(x.byCluster, c)
			}
		}
	}
	delete(x.byProp, prop)
}

// lookup returns the Propagations concerning cluster.
func (x *clusterIndex) lookup(cluster string) []types.NamespacedName {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(x.byCluster[cluster]))
	for p := range x.byCluster[cluster] {
		out = append(out, p)
	}
	return out
}

// objectID names a copy in a member: group and resource (not version:
// the same object is served under several), namespace and name.
type objectID struct {
	group, resource string
	namespace, name string
}

// resource returns id's resource at version.
func (id objectID) gvr(version string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: id.group, Version: version, Resource: id.resource}
}

func (id objectID) String() string {
	gr := id.resource
	if id.group != "" {
		gr += "." + id.group
	}
	if id.namespace == "" {
		return gr + "/" + id.name
	}
	return gr + "/" + id.namespace + "/" + id.name
}

// appliedRecord is what was last applied to one cluster for one
// Propagation.
type appliedRecord struct {
	// digest is the rendered object's.
	digest [sha256.Size]byte
	// fields is the digest of the fields the controller's field manager
	// owned in the copy after the apply (its managedFields entry): a
	// change of them in a watch event means someone else took a field
	// over, or removed it.
	fields [sha256.Size]byte
	// generation is the Propagation's generation the copy was rendered
	// from.
	generation int64
	id         objectID
	// version is the one id was applied at.
	version string
	uid     types.UID
}

// appliedCache remembers what was applied where, so that reconciles
// caused by events (a tunnel returning, another cluster's labels, an
// edit) write only what changed, and so that watch events from members
// can be told apart from the controller's own writes; and when each
// Propagation was last resynced in full.
type appliedCache struct {
	// onSize is told the number of records after each change (a gauge).
	onSize func(int)

	mu         sync.Mutex
	byProp     map[types.NamespacedName]map[string]appliedRecord
	size       int
	inflight   map[flightKey]bool // value: an event arrived during the apply
	lastResync map[types.NamespacedName]time.Time
}

type flightKey struct {
	cluster string
	prop    types.NamespacedName
}

func newAppliedCache(onSize func(int)) *appliedCache {
	if onSize == nil {
		onSize = func(int) {}
	}
	return &appliedCache{
		onSize:     onSize,
		byProp:     map[types.NamespacedName]map[string]appliedRecord{},
		inflight:   map[flightKey]bool{},
		lastResync: map[types.NamespacedName]time.Time{},
	}
}

// resyncDue says whether prop is due a full resync (its last one is at
// least period ago, or unknown), and if so records now as its time.
func (c *appliedCache) resyncDue(prop types.NamespacedName, now time.Time, period time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.lastResync[prop]; ok && now.Sub(last) < period {
		return false
	}
	c.lastResync[prop] = now
	return true
}

func (c *appliedCache) get(cluster string, prop types.NamespacedName) (appliedRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.byProp[prop][cluster]
	return r, ok
}

// begin marks an apply of prop to cluster in flight: watch events that
// arrive meanwhile are not compared with the record, which is about to
// change ([appliedCache.observe]).
func (c *appliedCache) begin(cluster string, prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight[flightKey{cluster, prop}] = false
}

// end ends an apply begun with begin that wrote nothing.
func (c *appliedCache) end(cluster string, prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, flightKey{cluster, prop})
}

// put records r and ends the apply in flight, if any; eventDuring says
// whether a watch event arrived during it (the copy may have changed
// again after the write).
func (c *appliedCache) put(cluster string, prop types.NamespacedName, r appliedRecord) (eventDuring bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := flightKey{cluster, prop}
	eventDuring = c.inflight[k]
	delete(c.inflight, k)
	m := c.byProp[prop]
	if m == nil {
		m = map[string]appliedRecord{}
		c.byProp[prop] = m
	}
	if _, ok := m[cluster]; !ok {
		c.size++
		c.onSize(c.size)
	}
	m[cluster] = r
	return eventDuring
}

// observe returns the record a watch event about prop's copy in cluster
// is compared with; inflight means an apply is under way, and the event
// is to be ignored.
func (c *appliedCache) observe(cluster string, prop types.NamespacedName) (r appliedRecord, ok, inflight bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := flightKey{cluster, prop}
	if _, inflight = c.inflight[k]; inflight {
		c.inflight[k] = true
		return appliedRecord{}, false, true
	}
	r, ok = c.byProp[prop][cluster]
	return r, ok, false
}

func (c *appliedCache) forget(cluster string, prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.byProp[prop]; m != nil {
		if _, ok := m[cluster]; ok {
			delete(m, cluster)
			c.size--
			c.onSize(c.size)
		}
		if len(m) == 0 {
			delete(c.byProp, prop)
		}
	}
}

// clusters returns the clusters prop has records in.
func (c *appliedCache) clusters(prop types.NamespacedName) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.byProp[prop]))
	for cl := range c.byProp[prop] {
		out = append(out, cl)
	}
	return out
}

// forgetProp drops prop's records in every cluster.
func (c *appliedCache) forgetProp(prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.size -= len(c.byProp[prop])
	c.onSize(c.size)
	delete(c.byProp, prop)
	delete(c.lastResync, prop)
}
