package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/tunnel"
)

// HostClusters is the registry of member clusters kept as Cluster objects
// in the hub's host cluster. It answers "does this cluster exist" from an
// informer, and revokes: when a Cluster goes away, every session of it is
// closed, and certificates issued before (they name the old UID) stop
// working.
type HostClusters struct {
	log hclog.Logger

	mu     sync.RWMutex
	uids   map[string]types.UID
	labels map[string]map[string]string
	cidrs  map[string][]string
	onGone []func(cluster string)
	synced func() bool
}

var _ ClusterSource = (*HostClusters)(nil)

// NewHostClusters registers on c's Cluster informer. Call before the cache
// starts.
func NewHostClusters(ctx context.Context, c cache.Cache, log hclog.Logger) (*HostClusters, error) {
	h := &HostClusters{log: log, uids: map[string]types.UID{}, labels: map[string]map[string]string{}, cidrs: map[string][]string{}}
	inf, err := c.GetInformer(ctx, &v1alpha1.Cluster{})
	if err != nil {
		return nil, fmt.Errorf("cluster informer: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { h.set(o) },
		UpdateFunc: func(_, o any) { h.set(o) },
		DeleteFunc: h.delete,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster informer: %w", err)
	}
	h.synced = reg.HasSynced
	return h, nil
}

// OnGone calls fn when a cluster is deleted or re-created under a new UID.
func (h *HostClusters) OnGone(fn func(cluster string)) {
	h.mu.Lock()
	h.onGone = append(h.onGone, fn)
	h.mu.Unlock()
}

// HasSynced says whether the informer has delivered the initial list.
func (h *HostClusters) HasSynced() bool { return h.synced != nil && h.synced() }

func (h *HostClusters) set(o any) {
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
		h.labels[c.Name] = c.Labels
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

func (h *HostClusters) delete(o any) {
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
	delete(h.labels, c.Name)
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

// Known implements ClusterSource.
func (h *HostClusters) Known(cluster string) bool {
	_, ok := h.UID(cluster)
	return ok
}

// UID is the current Cluster object's UID.
func (h *HostClusters) UID(cluster string) (types.UID, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	uid, ok := h.uids[cluster]
	return uid, ok
}

// NodeCIDRs are the cluster's spec.nodeCIDRs (nil: any).
func (h *HostClusters) NodeCIDRs(cluster string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cidrs[cluster]
}

// Names lists the registered clusters.
func (h *HostClusters) Names() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.uids))
	for n := range h.uids {
		out = append(out, n)
	}
	return out
}

// AgentCerts authenticates agents by a client certificate the hub's CA
// issued at enrollment. The certificate alone decides the cluster: a
// Backhaul-Cluster header naming another is refused, and so is a
// certificate whose Cluster was removed or re-created since.
type AgentCerts struct {
	CA       *CA
	Clusters interface {
		UID(cluster string) (types.UID, bool)
	}
}

var _ AgentAuthenticator = (*AgentCerts)(nil)

// AuthenticateAgent implements AgentAuthenticator.
func (a *AgentCerts) AuthenticateAgent(r *http.Request) (string, error) {
	id, err := a.identify(r)
	if err != nil {
		return "", err
	}
	if want := r.Header.Get(tunnel.HeaderCluster); want != "" && want != id.Cluster {
		return "", fmt.Errorf("%w: certificate is for cluster %q, not %q", errAgentForbidden, id.Cluster, want)
	}
	return id.Cluster, nil
}

// identify verifies the peer certificate and checks its cluster still
// exists under the same UID.
func (a *AgentCerts) identify(r *http.Request) (identity.AgentIdentity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return identity.AgentIdentity{}, errNoAgentCredentials
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.CA.Pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		// A caller's certificate from another CA is not an agent's.
		return identity.AgentIdentity{}, fmt.Errorf("%w: %v", errNoAgentCredentials, err)
	}
	id, err := identity.AgentIdentityOf(leaf)
	if err != nil {
		return identity.AgentIdentity{}, fmt.Errorf("%w: %v", errAgentAuth, err)
	}
	uid, ok := a.Clusters.UID(id.Cluster)
	switch {
	case !ok:
		return identity.AgentIdentity{}, fmt.Errorf("%w: cluster %q is not registered (removed?)", errAgentForbidden, id.Cluster)
	case uid != id.UID:
		return identity.AgentIdentity{}, fmt.Errorf("%w: certificate was issued to an earlier cluster %q and is revoked", errAgentForbidden, id.Cluster)
	}
	return id, nil
}

// agentAuthStatus maps an agent authentication error to its HTTP status.
func agentAuthStatus(err error) int {
	if errors.Is(err, errAgentForbidden) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}
