package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// StatusConfig is what the status updater needs.
type StatusConfig struct {
	Client client.Client
	// Clusters lists the registered clusters.
	Clusters *Clusters
	// Replicas is the session directory's view: every live replica (this
	// one included) with what it holds and measured.
	Replicas func() []Replica
	// Resync is how often the directory is looked at for changes.
	Resync time.Duration
	// Heartbeat: status is written at least this often while connected,
	// and at once on any change.
	Heartbeat time.Duration
	Log       hclog.Logger
}

// StatusUpdater keeps each Cluster's status true to what the replicas
// publish in the session directory: TunnelConnected when any replica holds
// a session, Ready from the member's /readyz as the replicas probed it in
// the background, the agent's and the member's versions, which replicas
// hold it, and a heartbeat. It sends nothing through the tunnels itself,
// so its cost does not grow with the fleet's round trips. A lost tunnel
// makes a cluster not Ready; it never removes it. Only the leader runs it.
type StatusUpdater struct {
	cfg StatusConfig

	mu   sync.Mutex
	seen map[string]observation
}

// NewStatusUpdater returns the updater; the singleton term starts it.
func NewStatusUpdater(cfg StatusConfig) *StatusUpdater {
	return &StatusUpdater{cfg: cfg, seen: map[string]observation{}}
}

// observation is what the directory says of one cluster.
type observation struct {
	replicas          []string
	sessions          int
	agentVersion      string
	ready             bool
	readyMsg          string
	kubeVersion       string
	heartbeat         time.Time
	connectedReplicas string // for the condition message
}

func (o observation) equal(p observation) bool {
	return slices.Equal(o.replicas, p.replicas) && o.sessions == p.sessions && o.agentVersion == p.agentVersion &&
		o.ready == p.ready && o.readyMsg == p.readyMsg && o.kubeVersion == p.kubeVersion
}

// Start writes status until ctx ends.
func (u *StatusUpdater) Start(ctx context.Context) error {
	// The workqueue folds repeated events for one cluster into one write.
	queue := workqueue.NewTyped[string]()
	context.AfterFunc(ctx, queue.ShutDown)
	var wg sync.WaitGroup
	for range statusWorkers {
		wg.Go(func() {
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
		})
	}
	defer wg.Wait()
	resync := time.NewTicker(u.cfg.Resync)
	defer resync.Stop()
	heartbeat := time.NewTicker(u.cfg.Heartbeat)
	defer heartbeat.Stop()
	all := true
	for {
		for _, c := range u.changed(all) {
			queue.Add(c)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			all = false
		case <-heartbeat.C:
			all = true
		}
	}
}

// statusWorkers bounds concurrent status writes.
const statusWorkers = 8

// changed reads the directory and returns the clusters whose observation
// changed (all registered clusters when all).
func (u *StatusUpdater) changed(all bool) []string {
	obs := observe(u.cfg.Replicas())
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, name := range u.cfg.Clusters.Names() {
		prev, had := u.seen[name]
		if all || !had || !prev.equal(obs[name]) {
			out = append(out, name)
		}
	}
	u.seen = obs
	return out
}

// observe folds the replicas' entries into one observation per cluster.
func observe(replicas []Replica) map[string]observation {
	out := map[string]observation{}
	for _, r := range replicas {
		for _, name := range slices.Sorted(maps.Keys(r.Clusters)) {
			h := r.Clusters[name]
			o := out[name]
			o.replicas = append(o.replicas, r.Name)
			o.sessions += int(h.Sessions)
			if o.agentVersion == "" {
				o.agentVersion = h.AgentVersion
			}
			if h.KubernetesVersion != "" {
				o.kubeVersion = h.KubernetesVersion
			}
			// Ready when any replica reached the member.
			if h.Ready && !o.ready {
				o.ready, o.readyMsg, o.heartbeat = true, h.ReadyMessage, r.Renewed
			} else if !o.ready && o.readyMsg == "" {
				o.readyMsg = h.ReadyMessage
			}
			out[name] = o
		}
	}
	for name, o := range out {
		o.connectedReplicas = strings.Join(o.replicas, ", ")
		out[name] = o
	}
	return out
}

func (u *StatusUpdater) observation(cluster string) observation {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[cluster]
}

func (u *StatusUpdater) update(ctx context.Context, name string) error {
	var c v1alpha1.Cluster
	if err := u.cfg.Client.Get(ctx, types.NamespacedName{Name: name}, &c); err != nil {
		return client.IgnoreNotFound(err)
	}
	o := u.observation(name)
	orig := c.DeepCopy()
	st := &c.Status
	now := metav1.Now()
	conn := metav1.Condition{Type: v1alpha1.ClusterTunnelConnected, Status: metav1.ConditionFalse, Reason: "NoAgent", Message: "no agent is connected to any hub replica", ObservedGeneration: c.Generation}
	ready := metav1.Condition{Type: v1alpha1.ClusterReady, Status: metav1.ConditionFalse, Reason: "TunnelDown", Message: "no agent is connected to any hub replica", ObservedGeneration: c.Generation}
	st.Agents = int32(o.sessions)
	st.HubReplicas = o.replicas
	if len(o.replicas) > 0 {
		conn.Status, conn.Reason, conn.Message = metav1.ConditionTrue, "AgentConnected", fmt.Sprintf("%d agent session(s) on hub replica(s) %s", o.sessions, o.connectedReplicas)
		st.AgentVersion = o.agentVersion
		ready.Reason, ready.Message = "ReadyzFailed", o.readyMsg
		if o.readyMsg == "" {
			ready.Reason, ready.Message = "NotProbedYet", "the member has not been probed through the tunnel yet"
		}
		if o.ready {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, "ReadyzOK", "the member's /readyz answered ok through the tunnel"
			hb := metav1.NewTime(o.heartbeat)
			st.LastHeartbeatTime = &hb
		}
		if o.kubeVersion != "" {
			st.KubernetesVersion = o.kubeVersion
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
