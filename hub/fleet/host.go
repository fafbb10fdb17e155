package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/logging"
)

// Host is the hub's host cluster, where Cluster and Propagation objects,
// the session directory, bootstrap tokens and the CA live
// (--registry=kube).
type Host struct {
	// Manager runs the informers every replica serves from (Clusters, the
	// session directory). It has no leader election: every replica serves.
	Manager ctrl.Manager
	// Direct reads and writes without a cache (secrets, config maps).
	Direct client.Client
	// Kube is a clientset for TokenReview, SubjectAccessReview and Leases.
	Kube      kubernetes.Interface
	Namespace string

	config *rest.Config
	scheme *runtime.Scheme
}

// LeaderElectionID names the Lease replicas compete for to do singleton
// work.
const LeaderElectionID = "backhaul-hub"

// NewHost connects to the host cluster; peersService names the headless
// Service whose EndpointSlices list the hub replicas. Nothing runs until
// the manager starts (Server.Run does that).
func NewHost(cfg *rest.Config, ns, peersService string, log hclog.Logger) (*Host, error) {
	scheme, err := apischeme.New()
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(logging.Logr(log.Named("controller")))
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "backhaul-hub"
	// client-go's default of 5 requests/s would make 1,000 Propagations
	// (a finalizer and a status write each) take minutes; the host's own
	// priority and fairness is the real limit.
	cfg.QPS, cfg.Burst = 200, 400
	h := &Host{Namespace: ns, config: cfg, scheme: scheme}
	inNamespace := cache.ByObject{Namespaces: map[string]cache.Config{ns: {}}}
	peers := inNamespace
	peers.Label = labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: peersService})
	if h.Manager, err = h.newManager(map[client.Object]cache.ByObject{
		&v1alpha1.HubReplica{}:       inNamespace,
		&discoveryv1.EndpointSlice{}: peers,
	}); err != nil {
		return nil, err
	}
	if h.Direct, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	if h.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	return h, nil
}

// NewSingletonManager is a fresh manager for one leadership term's work
// (controller-runtime managers start once).
func (h *Host) NewSingletonManager() (ctrl.Manager, error) { return h.newManager(nil) }

func (h *Host) newManager(byObject map[client.Object]cache.ByObject) (ctrl.Manager, error) {
	mgr, err := ctrl.NewManager(h.config, manager.Options{
		Scheme: h.scheme,
		Cache:  cache.Options{ByObject: byObject},
		// The hub serves its own /metrics and probes.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Client: client.Options{Cache: &client.CacheOptions{
			// Never cache every Secret and ConfigMap of the host.
			DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}},
		}},
		// Short: a term's work must stop well within the gap between the
		// lease's renew deadline and its duration.
		GracefulShutdownTimeout: new(3 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	return mgr, nil
}

// Answers asks the host API server's /readyz: nil when it answers ready.
// It tells a replica that could not review a caller when the host is back.
func (h *Host) Answers(ctx context.Context) error {
	rc := h.Kube.Discovery().RESTClient()
	if rc == nil {
		return errors.New("host cluster: no REST client")
	}
	return rc.Get().AbsPath("/readyz").Do(ctx).Error()
}

// LeaseLock is the Lease replicas compete for, held as identity.
func (h *Host) LeaseLock(identity string) (resourcelock.Interface, error) {
	return resourcelock.New(resourcelock.LeasesResourceLock, h.Namespace, LeaderElectionID, nil,
		h.Kube.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: identity})
}
