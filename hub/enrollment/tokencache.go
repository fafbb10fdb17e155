package enrollment

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"backhaul.io/backhaul/pkg/identity"
)

// ErrTokensNotSynced is the answer while the token cache has not yet
// listed the host's bootstrap Secrets once: a token it does not hold yet
// may well exist, so the caller gets 503, not 401.
var ErrTokensNotSynced = errors.New("bootstrap tokens not loaded from the host cluster yet")

// TokenCache holds the bootstrap-token Secrets of the hub's namespace, and
// only those (a field selector on their type), in an informer. Checking a
// token then costs no host API request, however many guesses arrive; one
// watch keeps the cache current. Every replica runs its own.
type TokenCache struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   corelisters.SecretNamespaceLister
}

var (
	_ TokenSecrets     = (*TokenCache)(nil)
	_ manager.Runnable = (*TokenCache)(nil)
)

// NewTokenCache watches namespace's bootstrap-token Secrets through kube.
// Nothing runs until Start.
func NewTokenCache(kube kubernetes.Interface, namespace string) (*TokenCache, error) {
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("type", identity.BootstrapSecretType).String()
		}))
	secrets := f.Core().V1().Secrets()
	inf := secrets.Informer()
	// Managed fields are most of a small Secret's size and never read.
	if err := inf.SetTransform(func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			s.ManagedFields = nil
		}
		return obj, nil
	}); err != nil {
		return nil, fmt.Errorf("bootstrap token cache: %w", err)
	}
	return &TokenCache{factory: f, informer: inf, lister: secrets.Lister().Secrets(namespace)}, nil
}

// Start runs the informer until ctx ends, and returns once its goroutines
// have.
func (c *TokenCache) Start(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	<-ctx.Done()
	c.factory.Shutdown()
	return nil
}

// Get returns the named Secret from the cache, waiting (within ctx) for
// the first list if it has not arrived. The Secret is shared: do not
// modify it.
func (c *TokenCache) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.lister.Get(name)
}

// List returns every cached bootstrap-token Secret (shared, read only).
func (c *TokenCache) List(ctx context.Context) ([]*corev1.Secret, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.lister.List(labels.Everything())
}

func (c *TokenCache) wait(ctx context.Context) error {
	select {
	case <-c.informer.HasSyncedChecker().Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTokensNotSynced, ctx.Err())
	}
}
