package hub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// ClusterStatusUpdater keeps each Cluster's status true to what this hub
// sees through the tunnel: TunnelConnected from the session registry,
// Ready from the member's /readyz, the agent's and the member's versions,
// and a heartbeat. A lost tunnel makes a cluster not Ready; it never
// removes it.
type ClusterStatusUpdater struct {
	Client   client.Client
	Clusters *HostClusters
	Registry *Registry
	// Member reaches a member's API server through its tunnel.
	Member func(cluster string) *rest.Config
	// Interval between probes of each connected cluster.
	Interval time.Duration
	// Heartbeat: status is written at least this often while connected,
	// and at once on any change.
	Heartbeat time.Duration
	// ProbeTimeout bounds one /readyz or /version call.
	ProbeTimeout time.Duration
	// Replica names this hub replica in status.hubReplicas.
	Replica string
	Log     hclog.Logger

	mu      sync.Mutex
	clients map[string]discovery.DiscoveryInterface
}

// statusWorkers bounds concurrent probes, so 1,000 clusters cost the hub a
// handful of goroutines.
const statusWorkers = 8

// Run probes until ctx ends. Connection changes are reported at once.
func (u *ClusterStatusUpdater) Run(ctx context.Context) error {
	u.clients = map[string]discovery.DiscoveryInterface{}
	// The workqueue folds repeated events for one cluster into one probe.
	queue := workqueue.NewTyped[string]()
	context.AfterFunc(ctx, queue.ShutDown)
	u.Registry.Watch(func(c string) {
		u.forget(c)
		queue.Add(c)
	})
	var wg sync.WaitGroup
	for range statusWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				name, shutdown := queue.Get()
				if shutdown {
					return
				}
				if err := u.update(ctx, name); err != nil && ctx.Err() == nil {
					u.Log.Warn("cluster status update failed", "cluster", name, "error", err)
				}
				queue.Done(name)
			}
		}()
	}
	t := time.NewTicker(u.Interval)
	defer t.Stop()
	for {
		for _, n := range u.Clusters.Names() {
			queue.Add(n)
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (u *ClusterStatusUpdater) forget(cluster string) {
	u.mu.Lock()
	delete(u.clients, cluster)
	u.mu.Unlock()
}

func (u *ClusterStatusUpdater) discovery(cluster string) (discovery.DiscoveryInterface, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if d, ok := u.clients[cluster]; ok {
		return d, nil
	}
	cfg := u.Member(cluster)
	cfg.Timeout = u.ProbeTimeout
	d, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	u.clients[cluster] = d
	return d, nil
}

// observation is what one probe saw.
type observation struct {
	agents                int
	agentVersion          string
	ready                 bool
	readyMsg, kubeVersion string
}

func (u *ClusterStatusUpdater) observe(ctx context.Context, cluster string) observation {
	var o observation
	o.agents, o.agentVersion = u.Registry.Agents(cluster)
	if o.agents == 0 {
		o.readyMsg = "no agent is connected to the hub"
		return o
	}
	d, err := u.discovery(cluster)
	if err != nil {
		o.readyMsg = err.Error()
		return o
	}
	pctx, cancel := context.WithTimeout(ctx, u.ProbeTimeout)
	defer cancel()
	body, err := d.RESTClient().Get().AbsPath("/readyz").DoRaw(pctx)
	if err != nil {
		o.readyMsg = fmt.Sprintf("/readyz through the tunnel: %v", err)
		return o
	}
	o.ready, o.readyMsg = true, string(body)
	if v, err := d.ServerVersion(); err == nil {
		o.kubeVersion = v.GitVersion
	}
	return o
}

func (u *ClusterStatusUpdater) update(ctx context.Context, name string) error {
	var c v1alpha1.Cluster
	if err := u.Client.Get(ctx, types.NamespacedName{Name: name}, &c); err != nil {
		return client.IgnoreNotFound(err)
	}
	o := u.observe(ctx, name)
	orig := c.DeepCopy()
	st := &c.Status
	now := metav1.Now()
	conn := metav1.Condition{Type: v1alpha1.ClusterTunnelConnected, Status: metav1.ConditionFalse, Reason: "NoAgent", Message: "no agent is connected to the hub", ObservedGeneration: c.Generation}
	ready := metav1.Condition{Type: v1alpha1.ClusterReady, Status: metav1.ConditionFalse, Reason: "TunnelDown", Message: o.readyMsg, ObservedGeneration: c.Generation}
	st.Agents = int32(o.agents)
	st.HubReplicas = nil
	if o.agents > 0 {
		conn.Status, conn.Reason, conn.Message = metav1.ConditionTrue, "AgentConnected", fmt.Sprintf("%d agent session(s) on hub replica %s", o.agents, u.Replica)
		st.HubReplicas = []string{u.Replica}
		st.AgentVersion = o.agentVersion
		ready.Reason = "ReadyzFailed"
		if o.ready {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, "ReadyzOK", "the member's /readyz answered ok through the tunnel"
			st.LastHeartbeatTime = &now
			if o.kubeVersion != "" {
				st.KubernetesVersion = o.kubeVersion
			}
		}
	}
	meta.SetStatusCondition(&st.Conditions, conn)
	meta.SetStatusCondition(&st.Conditions, ready)
	// Skip the write when only the heartbeat moved and it is recent.
	if orig.Status.LastHeartbeatTime != nil && st.LastHeartbeatTime != nil && now.Sub(orig.Status.LastHeartbeatTime.Time) < u.Heartbeat {
		cmp := c.Status.DeepCopy()
		cmp.LastHeartbeatTime = orig.Status.LastHeartbeatTime
		if equality.Semantic.DeepEqual(*cmp, orig.Status) {
			return nil
		}
	} else if equality.Semantic.DeepEqual(c.Status, orig.Status) {
		return nil
	}
	return u.Client.Status().Patch(ctx, &c, client.MergeFrom(orig))
}
