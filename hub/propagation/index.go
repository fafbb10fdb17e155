package propagation

import (
	"crypto/sha256"
	"sync"
	"time"

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

// appliedRecord is what was last applied to one cluster for one
// Propagation.
type appliedRecord struct {
	digest [sha256.Size]byte
}

// appliedCache remembers what was applied where, so that reconciles
// caused by events (a tunnel returning, another cluster's labels, an
// edit) write only what changed; and when each Propagation was last
// re-applied in full, so that the periodic resync still writes everything
// once per period (reverting drift in members).
type appliedCache struct {
	mu         sync.Mutex
	byCluster  map[string]map[types.NamespacedName]appliedRecord
	lastResync map[types.NamespacedName]time.Time
}

func newAppliedCache() *appliedCache {
	return &appliedCache{
		byCluster:  map[string]map[types.NamespacedName]appliedRecord{},
		lastResync: map[types.NamespacedName]time.Time{},
	}
}

// resyncDue says whether prop is due a full re-apply (its last one is at
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
	r, ok := c.byCluster[cluster][prop]
	return r, ok
}

func (c *appliedCache) put(cluster string, prop types.NamespacedName, r appliedRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.byCluster[cluster]
	if m == nil {
		m = map[types.NamespacedName]appliedRecord{}
		c.byCluster[cluster] = m
	}
	m[prop] = r
}

func (c *appliedCache) forget(cluster string, prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byCluster[cluster], prop)
}

// forgetProp drops prop's records in every cluster.
func (c *appliedCache) forgetProp(prop types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.byCluster {
		delete(m, prop)
	}
	delete(c.lastResync, prop)
}
