package propagation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Members is how the controller reaches member clusters. In the hub it
// wraps the tunnel registry; tests give direct connections.
type Members interface {
	// Config reaches cluster's API server (through the tunnel in
	// production) as the hub's pusher identity: user backhaul:hub in group
	// backhaul:propagators, which members grant what propagation needs.
	Config(cluster string) *rest.Config
	// Connected says whether the cluster's tunnel is up now.
	Connected(cluster string) bool
	// Watch calls fn (must not block) whenever a cluster's connection
	// changes.
	Watch(fn func(cluster string))
}

// member is what the controller does in one member cluster.
type member interface {
	// Mapping resolves gvk with the member's discovery. A kind the member
	// did not know at the last discovery (a CRD propagated since) is
	// rediscovered before it is reported missing.
	Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error)
	// Apply server-side applies obj with force, creating its namespace
	// first when the member lacks it, and returns the object as the
	// member then holds it.
	Apply(ctx context.Context, m *meta.RESTMapping, obj *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// Get reads an object; a missing one is an apierrors NotFound.
	Get(ctx context.Context, m *meta.RESTMapping, namespace, name string) (*unstructured.Unstructured, error)
	// Delete deletes the object if its UID is still uid ("": whatever
	// it is).
	Delete(ctx context.Context, m *meta.RESTMapping, namespace, name string, uid types.UID) error
}

// memberSet hands out one member client per cluster.
type memberSet interface {
	get(cluster string) (member, error)
	// forget drops cluster's client (its connection changed); the next get
	// builds a new one from a fresh Config.
	forget(cluster string)
}

// memberClients caches a dynamicMember per cluster.
type memberClients struct {
	members  Members
	minReset time.Duration

	mu        sync.Mutex
	byCluster map[string]*dynamicMember
}

var _ memberSet = (*memberClients)(nil)

func newMemberClients(members Members, minReset time.Duration) *memberClients {
	return &memberClients{members: members, minReset: minReset, byCluster: map[string]*dynamicMember{}}
}

func (c *memberClients) get(cluster string) (member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.byCluster[cluster]; m != nil {
		return m, nil
	}
	cfg := c.members.Config(cluster)
	if cfg == nil {
		return nil, fmt.Errorf("no client configuration for cluster %s", cluster)
	}
	m, err := newDynamicMember(cfg, c.minReset)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	c.byCluster[cluster] = m
	return m, nil
}

func (c *memberClients) forget(cluster string) {
	c.mu.Lock()
	delete(c.byCluster, cluster)
	c.mu.Unlock()
}

// dynamicMember is a member reached with a dynamic client, its kinds
// resolved by a RESTMapper over the member's discovery, fetched once and
// refreshed only when a kind is missing: a reconcile costs no discovery.
type dynamicMember struct {
	dyn      dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	minReset time.Duration

	mu      sync.Mutex
	epoch   uint64 // counts resets
	resetAt time.Time
}

var _ member = (*dynamicMember)(nil)

// memberConfig is cfg as the controller's clients of a member use it.
func memberConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		// client-go's default of 5 requests/s would throttle a fleet's
		// worth of applies; the member's API priority and fairness is the
		// limit that matters.
		cfg.QPS = -1
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "backhaul-hub/propagation"
	}
	return cfg
}

func newDynamicMember(cfg *rest.Config, minReset time.Duration) (*dynamicMember, error) {
	cfg = memberConfig(cfg)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &dynamicMember{
		dyn:      dyn,
		mapper:   restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		minReset: minReset,
	}, nil
}

func (m *dynamicMember) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m.mu.Lock()
	epoch := m.epoch
	m.mu.Unlock()
	mp, err := m.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err == nil || !meta.IsNoMatchError(err) {
		return mp, err
	}
	// Rediscover, unless another caller already did since we looked, and
	// at most once per minReset: a thousand objects of a kind the member
	// lacks must not cost a thousand discoveries.
	m.mu.Lock()
	if m.epoch == epoch && time.Since(m.resetAt) >= m.minReset {
		m.mapper.Reset()
		m.epoch++
		m.resetAt = time.Now()
	}
	retry := m.epoch != epoch
	m.mu.Unlock()
	if !retry {
		return nil, err
	}
	return m.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
}

func (m *dynamicMember) resource(mp *meta.RESTMapping, namespace string) dynamic.ResourceInterface {
	if mp.Scope.Name() == meta.RESTScopeNameNamespace {
		return m.dyn.Resource(mp.Resource).Namespace(namespace)
	}
	return m.dyn.Resource(mp.Resource)
}

func (m *dynamicMember) Apply(ctx context.Context, mp *meta.RESTMapping, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	live, err := m.resource(mp, obj.GetNamespace()).Apply(ctx, obj.GetName(), obj, opts)
	if ns, ok := missingNamespace(err); ok && ns == obj.GetNamespace() {
		if err := m.createNamespace(ctx, ns); err != nil {
			return nil, err
		}
		live, err = m.resource(mp, obj.GetNamespace()).Apply(ctx, obj.GetName(), obj, opts)
	}
	return live, err
}

func (m *dynamicMember) Get(ctx context.Context, mp *meta.RESTMapping, namespace, name string) (*unstructured.Unstructured, error) {
	return m.resource(mp, namespace).Get(ctx, name, metav1.GetOptions{})
}

func (m *dynamicMember) Delete(ctx context.Context, mp *meta.RESTMapping, namespace, name string, uid types.UID) error {
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	return m.resource(mp, namespace).Delete(ctx, name, opts)
}

var namespaceGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// createNamespace creates a namespace the Propagation's object needs, as
// an operator expects "write once at the hub" to work in a fresh member.
// It is never deleted by the controller: other objects may live there.
func (m *dynamicMember) createNamespace(ctx context.Context, name string) error {
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Namespace",
		"metadata": map[string]any{
			"name":   name,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "backhaul"},
		},
	}}
	_, err := m.dyn.Resource(namespaceGVR).Create(ctx, ns, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// missingNamespace reports the namespace a write failed for because it does
// not exist (the API server's 404 names the namespaces resource).
func missingNamespace(err error) (string, bool) {
	var se apierrors.APIStatus
	if err == nil || !errors.As(err, &se) {
		return "", false
	}
	st := se.Status()
	if st.Reason != metav1.StatusReasonNotFound || st.Details == nil || st.Details.Kind != "namespaces" || st.Details.Group != "" {
		return "", false
	}
	return st.Details.Name, true
}
