package fleet

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
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// Sessions is what the status updater reads of the session registry.
type Sessions interface {
	// Watch calls fn (must not block) when a cluster gains or loses a
	// session.
	Watch(fn func(cluster string))
	// Agents counts a cluster's sessions and names the newest agent's
	// version.
	Agents(cluster string) (n int, newestVersion string)
}

// StatusConfig is what the status updater needs.
type StatusConfig struct {
	Client   client.Client
	Clusters *Clusters
	Sessions Sessions
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
}

// StatusUpdater keeps each Cluster's status true to what this hub sees
// through the tunnel: TunnelConnected from the session registry, Ready
// from the member's /readyz, the agent's and the member's versions, and a
// heartbeat. A lost tunnel makes a cluster not Ready; it never removes it.
// It is a controller-runtime runnable that runs on the leader only.
type StatusUpdater struct {
	cfg StatusConfig

	mu      sync.Mutex
	clients map[string]discovery.DiscoveryInterface
}

var _ manager.LeaderElectionRunnable = (*StatusUpdater)(nil)

// NewStatusUpdater returns the updater; the manager starts it.
func NewStatusUpdater(cfg StatusConfig) *StatusUpdater {
	return &StatusUpdater{cfg: cfg, clients: map[string]discovery.DiscoveryInterface{}}
}

// NeedLeaderElection: only the leader writes status.
func (u *StatusUpdater) NeedLeaderElection() bool { return true }

// statusWorkers bounds concurrent probes, so 1,000 clusters cost the hub a
// handful of goroutines.
const statusWorkers = 8

// Start probes until ctx ends. Connection changes are reported at once.
func (u *StatusUpdater) Start(ctx context.Context) error {
	// The workqueue folds repeated events for one cluster into one probe.
	queue := workqueue.NewTyped[string]()
	context.AfterFunc(ctx, queue.ShutDown)
	u.cfg.Sessions.Watch(func(c string) {
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
					u.cfg.Log.Warn("cluster status update failed", "cluster", name, "error", err)
				}
				queue.Done(name)
			}
		}()
	}
	t := time.NewTicker(u.cfg.Interval)
	defer t.Stop()
	for {
		for _, n := range u.cfg.Clusters.Names() {
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

func (u *StatusUpdater) forget(cluster string) {
	u.mu.Lock()
	delete(u.clients, cluster)
	u.mu.Unlock()
}

func (u *StatusUpdater) discovery(cluster string) (discovery.DiscoveryInterface, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if d, ok := u.clients[cluster]; ok {
		return d, nil
	}
	cfg := u.cfg.Member(cluster)
	cfg.Timeout = u.cfg.ProbeTimeout
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

func (u *StatusUpdater) observe(ctx context.Context, cluster string) observation {
	var o observation
	o.agents, o.agentVersion = u.cfg.Sessions.Agents(cluster)
	if o.agents == 0 {
		o.readyMsg = "no agent is connected to the hub"
		return o
	}
	d, err := u.discovery(cluster)
	if err != nil {
		o.readyMsg = err.Error()
		return o
	}
	pctx, cancel := context.WithTimeout(ctx, u.cfg.ProbeTimeout)
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

func (u *StatusUpdater) update(ctx context.Context, name string) error {
	var c v1alpha1.Cluster
	if err := u.cfg.Client.Get(ctx, types.NamespacedName{Name: name}, &c); err != nil {
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
		conn.Status, conn.Reason, conn.Message = metav1.ConditionTrue, "AgentConnected", fmt.Sprintf("%d agent session(s) on hub replica %s", o.agents, u.cfg.Replica)
		st.HubReplicas = []string{u.cfg.Replica}
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
	if orig.Status.LastHeartbeatTime != nil && st.LastHeartbeatTime != nil && now.Sub(orig.Status.LastHeartbeatTime.Time) < u.cfg.Heartbeat {
		cmp := c.Status.DeepCopy()
		cmp.LastHeartbeatTime = orig.Status.LastHeartbeatTime
		if equality.Semantic.DeepEqual(*cmp, orig.Status) {
			return nil
		}
	} else if equality.Semantic.DeepEqual(c.Status, orig.Status) {
		return nil
	}
	return u.cfg.Client.Status().Patch(ctx, &c, client.MergeFrom(orig))
}
