package fleet

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// Clusters are the registered member clusters, kept as Cluster objects in
// the hub's host cluster and read from an informer: whether a cluster
// exists and under which UID, and its node CIDRs. Revocation starts here:
// when a Cluster goes away or is re-created, OnGone subscribers (the
// session registry) close its sessions, and certificates issued before
// (they name the old UID) stop working.
type Clusters struct {
	log hclog.Logger

	mu     sync.RWMutex
	uids   map[string]types.UID
	cidrs  map[string][]string
	onGone []func(cluster string)
}

// NewClusters registers on c's Cluster informer. Call before the cache
// starts.
func NewClusters(ctx context.Context, c cache.Cache, log hclog.Logger) (*Clusters, error) {
	h := &Clusters{log: log, uids: map[string]types.UID{}, cidrs: map[string][]string{}}
	inf, err := c.GetInformer(ctx, &v1alpha1.Cluster{})
	if err != nil {
		return nil, fmt.Errorf("cluster informer: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { h.set(o) },
		UpdateFunc: func(_, o any) { h.set(o) },
		DeleteFunc: h.delete,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster informer: %w", err)
	}
	return h, nil
}

// OnGone calls fn when a cluster is deleted or re-created under a new UID.
func (h *Clusters) OnGone(fn func(cluster string)) {
	h.mu.Lock()
	h.onGone = append(h.onGone, fn)
	h.mu.Unlock()
}

func (h *Clusters) set(o any) {
	c, ok := o.(*v1alpha1.Cluster)
	if !ok {
		return
	}
	h.mu.Lock()
	old, had := h.uids[c.Name]
	terminating := c.DeletionTimestamp != nil
	if terminating {
		delete(h.uids, c.Name)
	} else {
		h.uids[c.Name] = c.UID
		h.cidrs[c.Name] = c.Spec.NodeCIDRs
	}
	gone := had && (terminating || old != c.UID)
	fns := h.onGone
	h.mu.Unlock()
	if gone {
		h.log.Info("cluster revoked", "cluster", c.Name, "reason", map[bool]string{true: "deleting", false: "re-created"}[terminating])
		for _, fn := range fns {
			fn(c.Name)
		}
	}
}

func (h *Clusters) delete(o any) {
	if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	c, ok := o.(*v1alpha1.Cluster)
	if !ok {
		return
	}
	h.mu.Lock()
	_, had := h.uids[c.Name]
	delete(h.uids, c.Name)
	delete(h.cidrs, c.Name)
	fns := h.onGone
	h.mu.Unlock()
	if had {
		h.log.Info("cluster removed: closing its sessions", "cluster", c.Name)
	}
	for _, fn := range fns {
		fn(c.Name)
	}
}

// Known says whether cluster is registered.
func (h *Clusters) Known(cluster string) bool {
	_, ok := h.UID(cluster)
	return ok
}

// UID is the current Cluster object's UID.
func (h *Clusters) UID(cluster string) (types.UID, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	uid, ok := h.uids[cluster]
	return uid, ok
}

// NodeCIDRs are the cluster's spec.nodeCIDRs (nil: any).
func (h *Clusters) NodeCIDRs(cluster string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cidrs[cluster]
}

// Names lists the registered clusters.
func (h *Clusters) Names() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.uids))
	for n := range h.uids {
		out = append(out, n)
	}
	return out
}
