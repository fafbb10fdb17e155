package fleet

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	apischeme "backhaul.io/backhaul/pkg/apis/scheme"
	"backhaul.io/backhaul/pkg/logging"
)

// Host is the hub's host cluster, where Cluster and Propagation objects,
// bootstrap tokens and the CA live (--registry=kube).
type Host struct {
	// Manager runs the informers and the hub's controllers.
	Manager ctrl.Manager
	// Direct reads and writes without a cache (secrets, config maps).
	Direct client.Client
	// Kube is a clientset for TokenReview and SubjectAccessReview.
	Kube      kubernetes.Interface
	Namespace string
}

// LeaderElectionID names the Lease hub replicas compete for.
const LeaderElectionID = "backhaul-hub"

// NewHost connects to the host cluster. Nothing runs until the manager
// starts (Server.Run does that). With leaderElect, replicas compete for a
// Lease in ns: the leader serves, the others wait as hot standbys (not
// ready, so the Service sends them nothing) and take over within the lease
// duration when it goes.
func NewHost(cfg *rest.Config, ns string, leaderElect bool, log hclog.Logger) (*Host, error) {
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
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme: scheme,
		// The hub serves its own /metrics and probes.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Client: client.Options{Cache: &client.CacheOptions{
			// Never cache every Secret and ConfigMap of the host.
			DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}},
		}},
		GracefulShutdownTimeout: new(5 * time.Second),
		LeaderElection:          leaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: ns,
		// A hub that shuts down hands over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("host cluster: %w", err)
	}
	return &Host{Manager: mgr, Direct: direct, Kube: kube, Namespace: ns}, nil
}
